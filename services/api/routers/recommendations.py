"""GET /recommendations/{user_id}: the fallback chain (see services.api.recommend)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import MetricsDep, SettingsDep, SnapshotDep, StoreDep
from services.api.recommender import recommend
from services.api.routers.common import K, Category, UserId, errors
from services.api.schemas import Recommendations

router = APIRouter(prefix="/recommendations", tags=["recommendations"])


@router.get("/{user_id}", response_model=Recommendations, responses=errors(503))
def recommendations(
    user_id: UserId,
    snapshot: SnapshotDep,
    store: StoreDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    k: K = 10,
    session_id: Annotated[str | None, Query(min_length=1, max_length=256, description="The live session, if any.")] = None,
    category: Category = None,
) -> Recommendations:
    """Ranked items for a user: ranker -> ALS -> session item-item -> category popular -> global popular.

    The first source that can answer does; `source` names it and `fallbacks`
    says why the ones before it did not. Products the user bought recently are
    left out; flagged bots get non-personalised lists. 503 only when no
    candidates artifact exists at all.
    """
    return recommend(snapshot, store, metrics, user_id=user_id, k=k, session_id=session_id, category=category,
                     pool=settings.api_candidate_pool)  # fmt: skip
