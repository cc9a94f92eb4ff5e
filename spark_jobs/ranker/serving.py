"""The ranker at request time: read the online features the model was trained on, score the candidates.

`read_inputs` makes every Redis read a request needs in ONE pipeline (the
user's two-minute window, the session, the profile, and five product groups for
every candidate), with the same bucket choice as `OnlineStore.read_many`;
`Ranker.rerank` turns them into `candidate_features` and scores them. A Redis
outage raises `redis.RedisError`: the API's fallback chain takes over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from feature_store.artifacts import Artifacts
from feature_store.definitions import PRODUCT_1D, PRODUCT_1H, PRODUCT_2M, SESSION_FEATURES, USER_2M, USER_PROFILE, FeatureGroup
from feature_store.online import OnlineStore, bucket_for_read, decode_features, window_key
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
    """Everything `candidate_features` needs, read from Redis in one round trip."""
    ids = candidates.tolist()
    keys = [window_key(USER_2M, user_id, bucket_for_read(USER_2M, at)), window_key(USER_PROFILE, user_id)]
    if session_id:
        keys.append(window_key(SESSION_FEATURES, session_id))
    for _, group, back in PRODUCT_READS:
        bucket = bucket_for_read(group, at - back)
        keys += [window_key(group, p, bucket) for p in ids]
    with store.client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        raw = pipe.execute()

    def decoded(group: FeatureGroup, mapping) -> dict | None:
        return decode_features(group, mapping) if mapping else None

    user_2m, profile = decoded(USER_2M, raw[0]), decoded(USER_PROFILE, raw[1])
    session = decoded(SESSION_FEATURES, raw[2]) if session_id else None
    offset = 3 if session_id else 2
    per_product = {}
    for name, group, _ in PRODUCT_READS:
        per_product[name] = [decoded(group, m) for m in raw[offset : offset + len(ids)]]
        offset += len(ids)
    return RankInputs(at=at, candidates=candidates, als_scores=als_scores, user_2m=user_2m, session=session,
                      profile=profile, catalogue=catalogue, neighbours=neighbours, **per_product)  # fmt: skip


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
