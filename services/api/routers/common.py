"""Path and query parameter types and documented error responses shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

import redis
from fastapi import Path, Query

from feature_store.online import OnlineStore
from services.api.errors import ArtifactMissing, StoreUnavailable
from services.api.registry import CandidateSet, Snapshot
from services.api.schemas import ErrorBody

MAX_ID = 2**63 - 1  # the ids are int64 everywhere (Kafka keys, Parquet, Redis keys)

UserId = Annotated[int, Path(ge=0, le=MAX_ID, description="The shopper's id.")]
ProductId = Annotated[int, Path(ge=0, le=MAX_ID, description="The product's id.")]
SessionId = Annotated[str, Path(min_length=1, max_length=256, description="The session id (user_session).")]
K = Annotated[int, Query(ge=1, le=100, description="How many items to return.")]
SessionQuery = Annotated[str | None, Query(min_length=1, max_length=256, description="The live session, if any.")]
Category = Annotated[
    str | None,
    Query(
        min_length=1, max_length=256,
        description="A category code or prefix (`electronics` covers `electronics.smartphone`), or a numeric category id.",
    ),
]  # fmt: skip


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route may answer."""
    text = {404: "Not found", 503: "A dependency or artifact is missing"}
    return {status: {"model": ErrorBody, "description": text.get(status, "Error")} for status in statuses}


def candidates_of(snapshot: Snapshot) -> CandidateSet:
    """The loaded candidates, or a 503 that says how to make them."""
    if snapshot.candidates is None:
        raise ArtifactMissing("no candidates artifact is loaded yet: run `clickrec train candidates`")
    return snapshot.candidates


def session_events(store: OnlineStore, session_id: str) -> list[dict[str, Any]]:
    """The live session's events from the online store, oldest first ([] when it has none).

    Raises `StoreUnavailable` when Redis does not answer.
    """
    try:
        return store.session_events(session_id)
    except redis.RedisError as error:
        raise StoreUnavailable(f"the online store (Redis) does not answer: {error}") from None
