"""FastAPI dependencies as named `Annotated` aliases; the objects live on `app.state` (set by the lifespan).

They are `async def` although none awaits: FastAPI runs a plain `def` dependency in its
thread pool, a hand-off per dependency per request for an attribute read.

Tests swap any of them with `app.dependency_overrides[get_store] = ...`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from feature_store.online import OnlineStore
from feature_store.settings import Settings
from services.api.metrics import Metrics
from services.api.publishing import EventSink
from services.api.recommender import Recommender
from services.api.registry import Registry, Snapshot


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_snapshot(request: Request) -> Snapshot:
    """The artifacts of this request: read once, so one request never mixes two versions."""
    return request.app.state.registry.snapshot


async def get_store(request: Request) -> OnlineStore:
    return request.app.state.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


async def get_sink(request: Request) -> EventSink:
    return request.app.state.sink


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]
StoreDep = Annotated[OnlineStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SinkDep = Annotated[EventSink, Depends(get_sink)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
