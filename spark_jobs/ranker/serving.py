"""The ranker at request time: read the online features the model was trained on, score the candidates.

`read_inputs` makes every Redis read a request needs in ONE round trip (the
user's two-minute window, the session, the profile, and five product groups for
every candidate) through `OnlineStore.read_groups`, so the values and buckets
are exactly what `OnlineStore.read_many` returns;
`Ranker.rerank` turns them into `candidate_features` and scores them. A Redis
outage raises `redis.RedisError`: the API's fallback chain takes over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from feature_store.artifacts import Artifacts
from feature_store.definitions import PRODUCT_1D, PRODUCT_1H, PRODUCT_2M, SESSION_FEATURES, USER_2M, USER_PROFILE, FeatureGroup
from feature_store.online import OnlineStore
from spark_jobs.candidates.catalogue import Catalogue
from spark_jobs.candidates.item_item import ItemNeighbours
from spark_jobs.ranker import model as ranker_model
from spark_jobs.ranker.features import RankInputs, candidate_features

#: (RankInputs field, group, how far back the reader looks) for the per-candidate groups.
PRODUCT_READS: tuple[tuple[str, FeatureGroup, float], ...] = (
    ("product_2m", PRODUCT_2M, 0.0),
    ("product_1h", PRODUCT_1H, 0.0),
    ("product_1h_prev", PRODUCT_1H, PRODUCT_1H.length.total_seconds()),
    ("product_1d", PRODUCT_1D, 0.0),
    ("product_1d_prev", PRODUCT_1D, PRODUCT_1D.length.total_seconds()),
)


def read_inputs(
    store: OnlineStore,
    *,
    user_id: int,
    session_id: str | None,
    candidates: np.ndarray,
    als_scores: np.ndarray,
    at: float,
    catalogue: Catalogue,
    neighbours: ItemNeighbours,
) -> RankInputs:
    """Everything `candidate_features` needs, read from Redis in one round trip (`OnlineStore.read_groups`)."""
    ids = candidates.tolist()
    requests = [(USER_2M, [user_id], at), (USER_PROFILE, [user_id], at), (SESSION_FEATURES, [session_id] if session_id else [], at)]
    requests += [(group, ids, at - back) for _, group, back in PRODUCT_READS]
    (user_2m,), (profile,), session, *per_product = store.read_groups(requests)
    return RankInputs(at=at, candidates=candidates, als_scores=als_scores, user_2m=user_2m,
                      session=session[0] if session else None, profile=profile, catalogue=catalogue,
                      neighbours=neighbours,
                      **{name: rows for (name, _, _), rows in zip(PRODUCT_READS, per_product)})  # fmt: skip


@dataclass(eq=False)
class Ranker:
    """A loaded ranker artifact, ready to score candidates."""

    model: ranker_model.RankerModel

    @property
    def version(self) -> str:
        return self.model.version or "unversioned"

    @classmethod
    def load(cls, artifacts: Artifacts, version: str | None = None) -> Ranker:
        """The latest (or given) ranker version; ArtifactNotFound when none, FeatureMismatch when stale."""
        return cls(ranker_model.load(artifacts, version))

    def rerank(
        self,
        store: OnlineStore,
        *,
        user_id: int,
        session_id: str | None,
        candidates: np.ndarray,
        als_scores: np.ndarray,
        at: float | None = None,
        catalogue: Catalogue,
        neighbours: ItemNeighbours,
    ) -> np.ndarray:
        """One score per candidate (higher = better); raises redis.RedisError when Redis is down."""
        inputs = read_inputs(store, user_id=user_id, session_id=session_id, candidates=np.asarray(candidates, np.int64),
                             als_scores=np.asarray(als_scores, np.float32), at=time.time() if at is None else at,
                             catalogue=catalogue, neighbours=neighbours)  # fmt: skip
        return self.model.score(candidate_features(inputs))
