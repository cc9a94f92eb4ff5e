"""GET /health (liveness), GET /ready (each dependency's state), GET /metrics (Prometheus)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import MetricsDep, RegistryDep, SettingsDep, StoreDep
from services.api.metrics import STREAM_QUERIES
from services.api.schemas import Health, Readiness

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

#: The streaming job beats every few seconds; older than this, it is not running.
STREAM_HEARTBEAT_MAX_AGE_S = 30.0


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers HTTP. Says nothing about its dependencies (see /ready)."""
    return Health()


def _timed(check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check() or {}
        return {"ok": True, "latency_ms": round(1000 * (time.perf_counter() - started), 1), **detail}
    except Exception as error:  # any failure of a dependency is its state, not ours
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "Cannot serve"}})
def ready(request: Request, registry: RegistryDep, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: 200 when recommendations can be served (a candidates version is loaded), else 503.

    `status` is `degraded` while serving with a dependency down (Redis: answers
    fall back to popular lists; Kafka: POST /events answers 503; the streaming
    job not beating: online features go stale).
    """
    checks: dict[str, dict[str, Any]] = {}
    checks["redis"] = _timed(lambda: {"url": settings.redis_url} if store.client.ping() else None)

    def kafka() -> dict[str, Any]:
        topics = request.app.state.kafka_admin().list_topics(timeout=1.0).topics
        if settings.clicks_topic not in topics:
            raise LookupError(f"topic {settings.clicks_topic} does not exist")
        return {"bootstrap": settings.kafka_bootstrap, "topic": settings.clicks_topic}

    checks["kafka"] = _timed(kafka)

    def artifact_store() -> dict[str, Any]:
        from feature_store.artifacts import ArtifactNotFound

        try:
            registry.artifacts().latest("candidates")
        except ArtifactNotFound:
            pass  # reachable, just empty
        return {"url": settings.artifacts_url}

    checks["artifact_store"] = _timed(artifact_store)

    def stream() -> dict[str, Any]:
        try:
            beat = store.heartbeat("stream")
            queries = {query: store.stream_stats(query) for query in STREAM_QUERIES}
        except redis.RedisError as error:
            raise ConnectionError(f"Redis does not answer: {error}") from None
        age = None if beat is None else round(time.time() - beat, 1)
        if age is None or age > STREAM_HEARTBEAT_MAX_AGE_S:
            raise TimeoutError(f"no heartbeat from the streaming job for {age if age is not None else 'ever'} s")
        return {"heartbeat_age_s": age, "queries": queries}

    checks["stream"] = _timed(stream)

    snapshot = registry.snapshot
    artifacts = {
        kind: {"version": status.loaded, "latest": status.latest, "loaded_at": status.loaded_at, "error": status.error}
        for kind, status in registry.status.items()
    }
    compiled = getattr(snapshot.ranker, "compiled", None)  # None: no ranker loaded (or a stand-in without trees)
    if compiled is not None and "ranker" in artifacts:
        artifacts["ranker"]["scoring"] = "compiled trees" if compiled else "xgboost"
    serving = snapshot.candidates is not None
    degraded = not all(c["ok"] for c in checks.values()) or any(a["error"] for a in artifacts.values())
    state = "unavailable" if not serving else "degraded" if degraded else "ready"
    body = Readiness(status=state, serving=serving, checks=checks, artifacts=artifacts)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if serving else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: latency per route, answers by source, fallbacks, events, artifacts, stream lag."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
