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
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

import pybreaker
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feature_store.online import OnlineStore
from feature_store.settings import Settings, get_settings
from services.api import errors
from services.api.fast_path import RecommendationsFastPath
from services.api.metrics import Metrics
from services.api.publishing import EventSink
from services.api.recommender import Recommender
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


def redis_breaker(settings: Settings) -> pybreaker.CircuitBreaker:
    """Opens on a Redis error: for API_REDIS_RETRY_SECONDS the recommendation route answers from its
    fallbacks at once. The route runs on the event loop, so a hung Redis would otherwise stall every
    request (and /health) for a timeout each."""
    return pybreaker.CircuitBreaker(fail_max=1, reset_timeout=settings.api_redis_retry_seconds, name="redis",
                                    exclude=[lambda error: not isinstance(error, redis.RedisError)],
                                    throw_new_error_on_trip=False)  # the Redis error itself: logged by the caller  # fmt: skip


def refreeze_heap() -> None:
    """Hide what is loaded from the garbage collector, after letting it see a swapped-out version once.

    A full collection walks every object in the process: 66 ms with the artifacts
    loaded, a pause on whichever request triggers it. Frozen objects are not walked
    (nor freed when they end up in a cycle, so each artifact swap unfreezes, collects
    and freezes again: one such pause per new version, on the poller's thread).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class RequestTimer:
    """Times every HTTP request into `request_seconds` by method, route template and status.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    runs each request through an extra task and memory stream, a cost every
    request pays.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")  # set by the router on the shared scope
            template = getattr(route, "path", None) or "unmatched"  # templates, never raw ids: bounded labels
            self.metrics.request_seconds.labels(method=scope["method"], route=template, status=str(status)).observe(
                time.perf_counter() - started
            )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the process settings)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings, on_load=metrics.observe_artifact_load, on_swap=refreeze_heap)
        versions = await asyncio.to_thread(registry.refresh, strict=True)
        log.info("serving artifact versions %s", versions)
        store = open_store(settings)
        sink = EventSink(settings)
        app.state.registry, app.state.store, app.state.sink = registry, store, sink
        app.state.recommender = Recommender(registry, store, metrics, app.state.redis_breaker, settings.api_candidate_pool)
        app.state.kafka_admin = cache(
            lambda: AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "logger": logging.getLogger("librdkafka")})
        )
        poller = asyncio.create_task(registry.poll_forever(settings.api_artifact_poll_seconds), name="artifact-poll")
        # One BLAS thread: a request's ALS scoring is one small matrix-vector product, and BLAS's
        # helper threads spin after each one, taking a core from the other requests (measured:
        # 1.3 cores busy for one client at October scale). Restored when the app stops.
        blas = threadpool_limits(limits=1, user_api="blas")
        gc.freeze()  # see refreeze_heap
        try:
            yield
        finally:
            gc.unfreeze()
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
    app.state.redis_breaker = redis_breaker(settings)
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

    app.add_middleware(RecommendationsFastPath, api=app)
    app.add_middleware(RequestTimer, metrics=metrics)  # added last: outermost, it times the fast path's answers too
    for module in (recommendations, products, users, sessions, events, analytics, live, health, web):
        app.include_router(module.router)
    web.mount_static(app)
    return app
