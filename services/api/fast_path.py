"""GET /recommendations/{user_id} without FastAPI's per-request parameter solving.

FastAPI works out a route's parameters anew on every request, inspecting each
one's annotation: on the hottest route that was a fifth of a request's CPU (in
process, through the ASGI app: 1,270-1,300 µs per request by FastAPI's route,
1,080 µs by this path). This middleware answers the route's ordinary requests
itself, with the route's own parts: Starlette's match of the route's path, the
route's declarations (`UserId`, `RecommendationQuery`), the same recommender and
`answer_body`, and Starlette's `Response`. Whatever it cannot answer goes on to
FastAPI, which answers it as it would anyway: other routes and methods, input
that does not validate (FastAPI's 422 with reasons), an `ApiError` such as a
missing artifact (its 503), and apps with dependency overrides (tests).

It sits inside `RequestTimer`, so its answers are timed under the route's template.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import QueryParams
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.errors import ApiError
from services.api.routers.common import UserId
from services.api.routers.recommendations import RecommendationQuery, answer_body, recommendations, router

_USER_ID: TypeAdapter[int] = TypeAdapter(UserId)


class RecommendationsFastPath:
    """ASGI middleware: answers valid GET /recommendations/{user_id} requests of `api` directly."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self.route = next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is recommendations)

    def answer(self, scope: Scope) -> bytes | None:
        """The body FastAPI's route would answer `scope` with, or None when FastAPI should answer it."""
        if scope["type"] != "http" or scope["method"] != "GET" or self.api.dependency_overrides:
            return None
        match, child = self.route.matches(scope)
        if match is not Match.FULL:
            return None
        try:
            user_id = _USER_ID.validate_python(child["path_params"]["user_id"])
            # the last value of a repeated parameter wins, as in FastAPI (Starlette's QueryParams)
            query = RecommendationQuery.model_validate(dict(QueryParams(scope["query_string"])))
        except ValidationError:
            return None
        try:
            body = answer_body(self.api.state.recommender, user_id, query)
        except ApiError:  # raised before any work is done (no candidates at all): the route answers it
            return None
        scope.update(child)  # as the router would: `RequestTimer` labels the request with the route
        return body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.answer(scope)
        if body is None:
            await self.app(scope, receive, send)
            return
        await Response(body, media_type="application/json")(scope, receive, send)

