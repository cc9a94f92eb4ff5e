"""The HTTP API of clickrec (FastAPI): `services.api.app.create_app`, run by `clickrec api`.

- `app`: the application factory and its lifespan;
- `routers/`: one router per concern (recommendations, products and popular,
  users, sessions, events, analytics, health);
- `recommend`: the pure fallback chain and reasons; `recommender`: its I/O edge;
- `registry`: artifacts in memory, swapped atomically while serving;
- `deps`, `schemas`, `errors`, `metrics`, `publishing`.
"""
