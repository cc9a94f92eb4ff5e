"""The FastAPI application: `create_app(settings)` wires routers, dependencies, metrics and the lifespan.

The lifespan loads the latest artifacts (refusing to start on a model whose
feature list does not fit this code), opens the Redis client and the Kafka
publisher, and polls for new artifact versions every
API_ARTIFACT_POLL_SECONDS; everything is closed after `yield`.

Run it with `clickrec api` (uvicorn; host and port from the settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

import redis
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from redis.backoff import NoBackoff
from redis.retry import Retry
from threadpoolctl import threadpool_limits

from feature_store.online import OnlineStore
from feature_store.settings import Settings, get_settings
from services.api import errors
from services.api.metrics import Metrics
from services.api.publishing import EventSink
from services.api.registry import Registry
from services.api.routers import analytics, events, health, live, products, recommendations, sessions, users, web

log = logging.getLogger(__name__)

DESCRIPTION = """\
Recommendations, similar products, best sellers, live click ingestion, the
session purchase probability and clickstream KPIs of **clickrec**.

Recommendations come from a declared fallback chain (ranker -> ALS -> session
item-item -> category popular -> global popular); every answer names the
source that produced it, and a missing dependency costs a fallback, not an
error. `/ready` shows each dependency, `/metrics` is Prometheus.

The same server serves the web pages: the shop at `/`, the dashboard at
`/dashboard` and the user lookup at `/lookup` (see web/README.md).
"""


def open_store(settings: Settings) -> OnlineStore:
    """The online store with short timeouts and one immediate retry: a down Redis costs a fallback, not a wait."""
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.api_redis_timeout_seconds,
        socket_connect_timeout=settings.api_redis_timeout_seconds,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )
    return OnlineStore(client)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the process settings)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings, on_load=metrics.observe_artifact_load)
        versions = await asyncio.to_thread(registry.refresh, strict=True)
        log.info("serving artifact versions %s", versions)
        store = open_store(settings)
        sink = EventSink(settings)
        app.state.registry, app.state.store, app.state.sink = registry, store, sink
        app.state.kafka_admin = cache(
            lambda: AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "logger": logging.getLogger("librdkafka")})
        )
        poller = asyncio.create_task(registry.poll_forever(settings.api_artifact_poll_seconds), name="artifact-poll")
        # One BLAS thread: a request's ALS scoring is one small matrix-vector product, and BLAS's
        # helper threads spin after each one, taking a core from the other requests (measured:
        # 1.3 cores busy for one client at October scale). Restored when the app stops.
        blas = threadpool_limits(limits=1, user_api="blas")
        try:
            yield
        finally:
            blas.restore_original_limits()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await asyncio.to_thread(sink.close)
            store.client.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load their scripts from the app, not a CDN
    app = FastAPIOffline(
        title="clickrec API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    # read at scrape time, from whatever the lifespan has opened (nothing before it ran)
    metrics.watch(
        lambda: app.state.registry.snapshot.versions if hasattr(app.state, "registry") else {},
        lambda: app.state.store,
    )
    errors.install(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        if request.url.path == "/events":
            metrics.events_rejected.labels(reason="validation").inc()
        return await request_validation_exception_handler(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "detail": "internal error (logged)"}, status_code=500)

    @app.middleware("http")
    async def _observe(request: Request, call_next) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"  # templates, never raw ids: bounded labels
            metrics.request_seconds.labels(method=request.method, route=template, status=str(status)).observe(
                time.perf_counter() - started
            )

    for module in (recommendations, products, users, sessions, events, analytics, live, health, web):
        app.include_router(module.router)
    web.mount_static(app)
    return app
