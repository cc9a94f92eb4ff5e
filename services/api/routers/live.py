"""GET /live/summary: the dashboard's live panels in one call (Redis and the registry, no artifact scan).

- events/s and active users: the current two-minute windows of `user_2m`. The user
  ids come from a SCAN of the group's keys (``fs:v1:user_2m:<user>:...``, capped at
  LIVE_SCAN_MAX_KEYS keys examined); the store's own reader then decides which of
  them have a current window, so the figures are exactly what the ranker would read.
  Events/s = the events in those windows over the time they span.
- trending products: the same for `product_2m`, ranked by views, carts and
  purchases weighted like the `activity` feature;
- stream stats: the latest micro-batch of each stage (`OnlineStore.stream_stats`)
  and the streaming job's heartbeat;
- artifact versions and the offline metrics each job stored with its artifact.

The answer is computed at most once per LIVE_CACHE_SECONDS per process, so any
number of open dashboards costs Redis one scan per period.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np
import redis
from fastapi import APIRouter, Request

from feature_store.definitions import ACTIVITY_WEIGHTS, PRODUCT_2M, USER_2M, FeatureGroup
from feature_store.online import PREFIX, OnlineStore, bucket_for_read
from producer.events import EventType
from services.api.catalog import product_name
from services.api.deps import RegistryDep, StoreDep
from services.api.metrics import STREAM_QUERIES
from services.api.registry import Registry, Snapshot, json_safe
from services.api.schemas import ArtifactState, GroupFreshness, LiveSummary, StreamQueryStats, TrendingProduct

log = logging.getLogger(__name__)

router = APIRouter(prefix="/live", tags=["live"])

#: Keys a summary's SCAN examines per group at most (the counts are lower bounds beyond it).
LIVE_SCAN_MAX_KEYS = 200_000
#: Entities read back per group at most (the most recent buckets first).
LIVE_MAX_ENTITIES = 20_000
#: How long one computed summary is served again.
LIVE_CACHE_SECONDS = 1.0
TRENDING = 10



class _Cached:
    """The latest summary of one app (kept on `app.state`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = -math.inf
        self.summary: LiveSummary | None = None


def _recent_entities(store: OnlineStore, group: FeatureGroup, now: float) -> tuple[list[str], bool]:
    """Entity ids with a key of `group` whose bucket is recent enough to be in the current window."""
    prefix = f"{PREFIX}:{group.name}:"
    oldest = now - 2 * group.length.total_seconds()
    latest: dict[str, float] = {}
    examined = 0
    truncated = False
    for key in store.client.scan_iter(match=f"{prefix}*", count=2_000):
        examined += 1
        if examined > LIVE_SCAN_MAX_KEYS:
            truncated = True
            break
        parts = key.decode()[len(prefix) :].split(":")
        if len(parts) != 2:  # a pane's distinct-value set, not a feature hash
            continue
        try:
            bucket = float(parts[1])
        except ValueError:
            continue
        if bucket >= oldest and bucket > latest.get(parts[0], -math.inf):
            latest[parts[0]] = bucket
    ids = sorted(latest, key=lambda e: -latest[e])
    if len(ids) > LIVE_MAX_ENTITIES:
        ids, truncated = ids[:LIVE_MAX_ENTITIES], True
    return ids, truncated


def _current_windows(store: OnlineStore, group: FeatureGroup, now: float) -> tuple[list[str], list[dict[str, Any]], bool]:
    ids, truncated = _recent_entities(store, group, now)
    values = store.read_many(group, ids, now) if ids else []
    kept = [(e, v) for e, v in zip(ids, values) if v]
    return [e for e, _ in kept], [v for _, v in kept], truncated


def _stream_stats(raw: dict[str, str], now: float) -> StreamQueryStats:
    def number(name: str) -> float | None:
        try:
            return float(raw[name])
        except (KeyError, ValueError):
            return None

    written = number("written_at")
    batch = number("batch_id")
    rows = number("input_rows")
    return StreamQueryStats(
        batch_id=None if batch is None else int(batch), input_rows=None if rows is None else int(rows),
        duration_s=number("duration_s"), lag_s=number("lag_s"), written_at=written,
        age_s=None if written is None else round(max(0.0, now - written), 3),
    )  # fmt: skip


def _trending(snapshot: Snapshot, ids: list[str], values: list[dict[str, Any]]) -> list[TrendingProduct]:
    weight = {t: ACTIVITY_WEIGHTS[t] for t in (EventType.VIEW, EventType.CART, EventType.PURCHASE)}
    rows = []
    for pid, v in zip(ids, values):
        views, carts, purchases = (int(v.get(name) or 0) for name in ("views", "carts", "purchases"))
        activity = views * weight[EventType.VIEW] + carts * weight[EventType.CART] + purchases * weight[EventType.PURCHASE]
        rows.append((activity, int(pid), views, carts, purchases, int(v.get("distinct_users") or 0)))
    rows.sort(key=lambda r: (-r[0], r[1]))
    rows = rows[:TRENDING]
    cands = snapshot.candidates
    infos = cands.describe_many(np.asarray([r[1] for r in rows], np.int64)) if cands and rows else [None] * len(rows)
    out = []
    for (activity, pid, views, carts, purchases, users), info in zip(rows, infos):
        info = info or {"product_id": pid}
        out.append(TrendingProduct(
            **info, name=product_name(pid, info.get("category_code"), info.get("brand")), views=views, carts=carts,
            purchases=purchases, distinct_users=users, activity=activity,
        ))  # fmt: skip
    return out


def _freshness(group: FeatureGroup, values: list[dict[str, Any]], now: float) -> GroupFreshness:
    stamps = [float(v["_ts"]) for v in values if v.get("_ts") is not None]
    return GroupFreshness(group=group.name, entities=len(values),
                          newest_write_age_s=round(max(0.0, now - max(stamps)), 3) if stamps else None)  # fmt: skip


def offline_metrics(snapshot: Snapshot) -> dict[str, Any]:
    """What each loaded artifact's job measured: the ranker's held-out table, the purchase model's test report,
    the candidates' coverage figures."""
    out: dict[str, Any] = {}
    ranker_metrics = getattr(getattr(snapshot.ranker, "model", None), "metrics", None)
    if ranker_metrics:
        out["ranker"] = {"test": ranker_metrics.get("test"), "test_queries": ranker_metrics.get("test_queries"),
                         "train_queries": ranker_metrics.get("train_queries")}  # fmt: skip
    purchase_metrics = getattr(snapshot.purchase_model, "metrics", None)
    if purchase_metrics:
        test = purchase_metrics.get("test") or {}
        out["purchase_model"] = {
            "test": {k: test.get(k) for k in ("auc", "pr_auc", "accuracy", "majority_accuracy", "base_rate", "rows") if k in test},
            "reference_auc_carted_so_far": purchase_metrics.get("reference_auc_carted_so_far"),
        }
    if snapshot.candidates is not None:
        out["candidates"] = {**(snapshot.candidates.manifest.get("metrics") or {}),
                             "rows": snapshot.candidates.manifest.get("rows")}  # fmt: skip
    return json_safe(out)


def compute_summary(registry: Registry, store: OnlineStore, now: float | None = None) -> LiveSummary:
    """The live summary now (see the module docstring); Redis down gives empty live figures and the error."""
    now = time.time() if now is None else now
    snapshot = registry.snapshot
    artifacts = {kind: ArtifactState(version=s.loaded, latest=s.latest, loaded_at=s.loaded_at, error=s.error)
                 for kind, s in registry.status.items()}  # fmt: skip
    summary: dict[str, Any] = {
        "at": now, "events_per_s": None, "events_2m": 0, "active_users_2m": 0, "scan_truncated": False, "stream": {},
        "heartbeat_age_s": None, "trending": [], "freshness": [], "artifacts": artifacts,
        "offline_metrics": offline_metrics(snapshot),
    }  # fmt: skip
    try:
        users, user_values, users_truncated = _current_windows(store, USER_2M, now)
        products, product_values, products_truncated = _current_windows(store, PRODUCT_2M, now)
        stream = {query: _stream_stats(store.stream_stats(query), now) for query in STREAM_QUERIES}
        beat = store.heartbeat("stream")
    except redis.RedisError as error:
        log.warning("live summary without Redis: %s", error)
        return LiveSummary(**summary, online_store_error=f"the online store (Redis) does not answer: {error}")
    events = sum(int(v.get("events") or 0) for v in user_values)
    # the current window ends at the next slide boundary: it spans the last `length - (end - now)` seconds
    span = USER_2M.length.total_seconds() - (bucket_for_read(USER_2M, now) - now)
    summary.update(
        events_per_s=round(events / span, 3) if span > 0 else None, events_2m=events, active_users_2m=len(users),
        scan_truncated=users_truncated or products_truncated, stream=stream,
        heartbeat_age_s=None if beat is None else round(max(0.0, now - beat), 3),
        trending=_trending(snapshot, products, product_values),
        freshness=[_freshness(USER_2M, user_values, now), _freshness(PRODUCT_2M, product_values, now)],
    )  # fmt: skip
    return LiveSummary(**summary)


@router.get("/summary", response_model=LiveSummary)
def live_summary(request: Request, registry: RegistryDep, store: StoreDep) -> LiveSummary:
    """Events/s, active users and trending products of the last two minutes, stream lag, artifact versions and
    offline metrics, for the dashboard's live panels (recomputed at most once a second)."""
    cached: _Cached | None = getattr(request.app.state, "live_summary", None)
    if cached is None:
        cached = request.app.state.live_summary = _Cached()
    with cached.lock:  # one computation at a time; the others wait and get its answer
        if cached.summary is None or time.monotonic() - cached.at >= LIVE_CACHE_SECONDS:
            cached.summary, cached.at = compute_summary(registry, store), time.monotonic()
        return cached.summary
