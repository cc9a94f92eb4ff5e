"""GET /analytics/...: the KPIs of the latest `analytics` artifact (see spark_jobs/analytics), for the dashboard.

One route per KPI family; each answers the artifact version and its tables
as JSON records, or 503 until `clickrec analytics` has published a version.
A session's journey is read live (online store, else the lake).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import pyarrow.dataset as ds
from fastapi import APIRouter, Query

from feature_store.lake import Lake
from services.api.deps import SettingsDep, SnapshotDep, StoreDep
from services.api.errors import ArtifactMissing, ServiceUnavailable, UnknownSession
from services.api.registry import AnalyticsSet, Snapshot, json_safe
from services.api.routers.common import SessionId, errors, session_events
from services.api.schemas import AnalyticsAnswer, Journey, JourneyStep, KpiTable
from spark_jobs.purchase_model.features import order_session

router = APIRouter(prefix="/analytics", tags=["analytics"], responses=errors(503))

Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per table at most.")]


def _analytics(snapshot: Snapshot) -> AnalyticsSet:
    if snapshot.analytics is None:
        raise ArtifactMissing("no analytics artifact is loaded yet: run `clickrec analytics`")
    return snapshot.analytics


def _answer(
    snapshot: Snapshot, *names: str, limit: int | None = None, where: dict[str, Any] | None = None, order_by: str | None = None
) -> AnalyticsAnswer:
    analytics = _analytics(snapshot)
    tables = []
    for name in names:
        rows = analytics.table(name)
        if where:
            rows = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
        if order_by:
            rows = sorted(rows, key=lambda r: r[order_by])
        tables.append(KpiTable(name=name, rows=rows[:limit] if limit else rows))
    return AnalyticsAnswer(version=analytics.version, data_range=analytics.manifest.get("data_range"), tables=tables)


@router.get("/summary", response_model=AnalyticsAnswer)
def summary(snapshot: SnapshotDep) -> AnalyticsAnswer:
    """Artifact version, data range, event counts and session statistics."""
    return _answer(snapshot, "event_counts", "session_stats", "funnel")


@router.get("/funnel", response_model=AnalyticsAnswer)
def funnel(snapshot: SnapshotDep) -> AnalyticsAnswer:
    """View -> cart -> purchase by users and by sessions, with the rates between stages."""
    return _answer(snapshot, "funnel", "event_counts")


@router.get("/abandonment", response_model=AnalyticsAnswer)
def abandonment(snapshot: SnapshotDep, limit: Limit = 100) -> AnalyticsAnswer:
    """Cart conversion and abandonment by category and by brand (groups with enough carts)."""
    return _answer(snapshot, "cart_conversion_by_category", "cart_conversion_by_brand", limit=limit)


@router.get("/categories", response_model=AnalyticsAnswer)
def categories(
    snapshot: SnapshotDep,
    by: Annotated[Literal["revenue", "purchases"], Query(description="Best first by this measure.")] = "revenue",
    limit: Limit = 100,
) -> AnalyticsAnswer:
    """The best categories by revenue or by purchases (each row carries both ranks)."""
    return _answer(snapshot, "categories", limit=limit, order_by=f"rank_by_{by}")


@router.get("/brands", response_model=AnalyticsAnswer)
def brands(
    snapshot: SnapshotDep,
    category: Annotated[str | None, Query(min_length=1, max_length=256, description="Only this category code.")] = None,
    limit: Limit = 500,
) -> AnalyticsAnswer:
    """The best brands of each category (purchases, revenue)."""
    return _answer(snapshot, "top_brands_by_category", limit=limit, where={"category_code": category} if category else None)


@router.get("/prime-time", response_model=AnalyticsAnswer)
def prime_time(snapshot: SnapshotDep) -> AnalyticsAnswer:
    """Purchases and revenue by UTC hour and by day of month."""
    return _answer(snapshot, "purchases_by_hour", "purchases_by_day_of_month")


@router.get("/revenue", response_model=AnalyticsAnswer)
def revenue(snapshot: SnapshotDep) -> AnalyticsAnswer:
    """Revenue, purchases and buyers per day and per month (UTC)."""
    return _answer(snapshot, "revenue_daily", "revenue_monthly")


@router.get("/customers", response_model=AnalyticsAnswer)
def customers(snapshot: SnapshotDep, limit: Limit = 100) -> AnalyticsAnswer:
    """The top customers by spend."""
    return _answer(snapshot, "top_customers", limit=limit)


@router.get("/sessions", response_model=AnalyticsAnswer)
def session_stats(snapshot: SnapshotDep) -> AnalyticsAnswer:
    """Session length and events per session (all sessions, and those with a purchase)."""
    return _answer(snapshot, "session_stats")


def _lake_events(settings: Any, session_id: str) -> list[dict[str, Any]]:
    try:
        dataset = Lake(settings.lake_url, settings).dataset()
    except (FileNotFoundError, OSError):
        return []
    columns = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
               "user_id", "user_session"]  # fmt: skip
    return dataset.to_table(columns=columns, filter=ds.field("user_session") == session_id).to_pylist()


@router.get("/sessions/{session_id}/journey", response_model=Journey, responses=errors(404, 503))
def journey(session_id: SessionId, snapshot: SnapshotDep, store: StoreDep, settings: SettingsDep) -> Journey:
    """One session's events in order (repeated rows removed): the live session, else the lake."""
    source = "online_store"
    try:
        events = session_events(store, session_id)
    except ServiceUnavailable:  # Redis down: the lake still has every event
        events = []
    if not events:
        source, events = "lake", _lake_events(settings, session_id)
    if not events:
        raise UnknownSession(f"no events of session {session_id!r} in the online store or the lake")
    ordered = order_session(events)
    cands = snapshot.candidates
    infos = cands.describe_many([int(e["product_id"]) for e in ordered]) if cands else [None] * len(ordered)
    start = ordered[0]["_t"]
    steps = []
    for n, (event, info) in enumerate(zip(ordered, infos), start=1):
        info = info or {}
        steps.append(JourneyStep(
            step=n,
            event_time=datetime.fromtimestamp(event["_t"], timezone.utc).isoformat(),
            seconds_since_start=round(event["_t"] - start, 3),
            event_type=str(event["event_type"]),
            product_id=int(event["product_id"]),
            category_code=event.get("category_code") or info.get("category_code"),
            brand=event.get("brand") or info.get("brand"),
            price=json_safe(None if event.get("price") is None else float(event["price"])),
            user_id=None if event.get("user_id") is None else int(event["user_id"]),
        ))  # fmt: skip
    return Journey(session_id=session_id, source=source, steps=steps)  # type: ignore[arg-type]
