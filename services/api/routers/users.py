"""GET /users/{user_id}/features: the online features the ranker sees, with their freshness."""

from __future__ import annotations

import time
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Query

from feature_store.definitions import SESSION_FEATURES, USER_2M, USER_PROFILE, FeatureGroup, Window
from feature_store.online import bucket_for_read, window_key
from services.api.deps import SnapshotDep, StoreDep
from services.api.errors import StoreUnavailable
from services.api.registry import json_safe
from services.api.routers.common import UserId, errors
from services.api.schemas import FeatureGroupValues, UserFeatures

router = APIRouter(prefix="/users", tags=["users"])


def _group(group: FeatureGroup, entity: Any, values: dict[str, Any] | None, at: float) -> FeatureGroupValues | None:
    if values is None:
        return None
    bucket = None if group.window in (Window.SESSION, Window.BATCH) else bucket_for_read(group, at)
    written = values.pop("_ts", None)
    return FeatureGroupValues(
        group=group.name, key=window_key(group, entity, bucket), written_at=written,
        age_s=None if written is None else round(max(0.0, at - written), 3), features=json_safe(values),
    )  # fmt: skip


@router.get("/{user_id}/features", response_model=UserFeatures, responses=errors(503))
def user_features(
    user_id: UserId,
    store: StoreDep,
    snapshot: SnapshotDep,
    session_id: Annotated[str | None, Query(min_length=1, max_length=256, description="Also show this session.")] = None,
) -> UserFeatures:
    """Every online feature group of the user now (and of the session), as the ranker reads them.

    A group the store holds nothing for is null: its features are missing
    (NaN for the ranker), not zero. 503 when Redis does not answer.
    """
    at = time.time()
    try:
        bot = store.is_bot(user_id)
        reads = [(USER_2M, user_id), (USER_PROFILE, user_id)] + ([(SESSION_FEATURES, session_id)] if session_id else [])
        groups = {group.name: _group(group, entity, store.read(group, entity, at), at) for group, entity in reads}
    except redis.RedisError as error:
        raise StoreUnavailable(f"the online store (Redis) does not answer: {error}") from None
    known = None if snapshot.candidates is None else snapshot.candidates.user_vector(user_id) is not None
    return UserFeatures(user_id=user_id, session_id=session_id, at=at, bot=bot, in_candidates=known, groups=groups)
