"""GET /sessions/{session_id}/purchase-probability: the purchase model scored on the live session."""

from __future__ import annotations

import redis
from fastapi import APIRouter

from feature_store.definitions import USER_PROFILE
from services.api.deps import SnapshotDep, StoreDep
from services.api.errors import ArtifactMissing, StoreUnavailable, UnknownSession
from services.api.registry import json_safe
from services.api.routers.common import SessionId, errors, session_events
from services.api.schemas import PurchaseProbability
from spark_jobs.purchase_model.features import UserHistory, order_session, session_features
from spark_jobs.purchase_model.model import score_session

router = APIRouter(prefix="/sessions", tags=["sessions"])

#: user_profile field -> UserHistory field (the history the model was trained with, before the session).
HISTORY_FIELDS = {"sessions": "sessions", "purchase_sessions": "purchase_sessions", "purchases": "purchases",
                  "views": "views", "carts": "carts"}  # fmt: skip


def user_history(profile: dict | None) -> UserHistory | None:
    """The model's user history from the `user_profile` group; None (unknown: NaN features) without one."""
    if not profile:
        return None
    return UserHistory(**{field: int(profile.get(name) or 0) for name, field in HISTORY_FIELDS.items()})


@router.get("/{session_id}/purchase-probability", response_model=PurchaseProbability, responses=errors(404, 503))
def purchase_probability(session_id: SessionId, snapshot: SnapshotDep, store: StoreDep) -> PurchaseProbability:
    """P(the session ends in a purchase), from its events so far and the user's history.

    404 when the online store holds no event of the session (unknown, or
    expired two hours after its last event); 503 without a purchase model.
    """
    model = snapshot.purchase_model
    if model is None:
        raise ArtifactMissing("no purchase_model artifact is loaded: run `clickrec train purchase-model`")
    events = session_events(store, session_id)
    if not events:
        raise UnknownSession(f"no live session {session_id!r} in the online store")
    ordered = order_session(events)
    latest = ordered[-1]
    user_id = None if latest.get("user_id") is None else int(latest["user_id"])
    try:
        profile = store.read(USER_PROFILE, user_id) if user_id is not None else None
    except redis.RedisError as error:
        raise StoreUnavailable(f"the online store (Redis) does not answer: {error}") from None
    history = user_history(profile)
    features = session_features(events, history)
    return PurchaseProbability(
        session_id=session_id, user_id=user_id, probability=score_session(features, model),
        events=len(ordered), history_known=history is not None, model_version=model.version,
        features=json_safe(features),
    )  # fmt: skip
