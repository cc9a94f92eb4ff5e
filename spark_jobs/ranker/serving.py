"""The ranker at request time: read the online features the model was trained on, score the candidates.

`read_inputs` makes every Redis read a request needs in ONE round trip (the
user's two-minute window, the session, the profile, and five product groups for
every candidate) through `OnlineStore.read_groups`, so the values and buckets
are exactly what `OnlineStore.read_many` returns;
`Ranker.rerank` turns them into `candidate_features` and scores them. A Redis
outage raises `redis.RedisError`: the API's fallback chain takes over.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from feature_store.artifacts import Artifacts
from feature_store.definitions import PRODUCT_1D, PRODUCT_1H, PRODUCT_2M, SESSION_FEATURES, USER_2M, USER_PROFILE, FeatureGroup
from feature_store.online import OnlineStore, Shopper, bucket_for_read
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


class ProductFeatureCache:
    """Recently read product rows per (group, bucket), each generation kept `seconds` at most.

    A product's windows do not depend on who asks, and a busy API asks for the same
    popular products many times a second: served from here they cost a dict lookup
    instead of a Redis read and its decoding. The price is freshness: a product
    feature may be up to `seconds` old (user and session features are always read).
    A generation (one dict per group and bucket) is dropped whole when it is older
    than `seconds` or holds `max_rows`; 0 seconds turns the cache off.
    """

    def __init__(self, seconds: float = 1.0, max_rows: int = 100_000) -> None:
        self.seconds = seconds
        self.max_rows = max_rows
        self._generations: dict[tuple[str, int], tuple[float, dict[int, dict | None]]] = {}
        self._lock = threading.Lock()  # the API serves requests from a thread pool

    def _generation(self, name: str, bucket: int, now: float) -> dict[int, dict | None]:
        born, rows = self._generations.get((name, bucket), (now, {}))
        if now - born >= self.seconds or len(rows) >= self.max_rows:
            born, rows = now, {}
        self._generations[(name, bucket)] = (born, rows)
        return rows

    def read(self, store: OnlineStore, ids: list[int], at: float, first: list) -> list[list]:
        """PRODUCT_READS rows of `ids` at `at`, reading only what is not cached, in the same round trip as `first`."""
        now = time.monotonic()
        with self._lock:
            if self.seconds > 0:
                for key in [k for k, (born, _) in self._generations.items() if now - born >= self.seconds]:
                    del self._generations[key]  # old buckets and stale generations
                generations = [self._generation(name, bucket_for_read(group, at - back), now)
                               for name, group, back in PRODUCT_READS]  # fmt: skip
            else:
                generations = [{} for _ in PRODUCT_READS]
            cached = [[rows.get(p, _MISS) for p in ids] for rows in generations]
        missing = [[i for i, row in enumerate(rows) if row is _MISS] for rows in cached]
        requests = [(group, [ids[i] for i in todo], at - back) for (_, group, back), todo in zip(PRODUCT_READS, missing)]
        replies = store.read_groups([*first, *requests])
        with self._lock:
            for rows, todo, fresh, generation in zip(cached, missing, replies[len(first) :], generations):
                for i, row in zip(todo, fresh):
                    rows[i] = generation[ids[i]] = row
        return replies[: len(first)] + cached


_MISS = object()


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
    cache: ProductFeatureCache | None = None,
    shopper: Shopper | None = None,
) -> RankInputs:
    """Everything `candidate_features` needs, read from Redis in one round trip (`OnlineStore.read_groups`).

    The product rows come from `cache` when it holds them (see ProductFeatureCache);
    the user's and session's rows from `shopper` when the caller has read them at `at`.
    """
    ids = candidates.tolist()
    if shopper is None:
        user_reads = [(USER_2M, [user_id], at), (USER_PROFILE, [user_id], at),
                      (SESSION_FEATURES, [session_id] if session_id else [], at)]  # fmt: skip
        (user_2m,), (profile,), session, *per_product = (cache or ProductFeatureCache(0)).read(store, ids, at, user_reads)
        shopper = Shopper(profile=profile, user_2m=user_2m, session=session[0] if session else None)
    else:
        per_product = (cache or ProductFeatureCache(0)).read(store, ids, at, [])
    return RankInputs(at=at, candidates=candidates, als_scores=als_scores, user_2m=shopper.user_2m,
                      session=shopper.session, profile=shopper.profile, catalogue=catalogue, neighbours=neighbours,
                      **{name: rows for (name, _, _), rows in zip(PRODUCT_READS, per_product)})  # fmt: skip


@dataclass(eq=False)
class Ranker:
    """A loaded ranker artifact, ready to score candidates."""

    model: ranker_model.RankerModel
    cache: ProductFeatureCache = field(default_factory=ProductFeatureCache)

    @property
    def version(self) -> str:
        return self.model.version or "unversioned"

    @classmethod
    def load(cls, artifacts: Artifacts, version: str | None = None, *, product_cache_seconds: float = 1.0) -> Ranker:
        """The latest (or given) ranker version; ArtifactNotFound when none, FeatureMismatch when stale."""
        return cls(ranker_model.load(artifacts, version), ProductFeatureCache(product_cache_seconds))

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
        shopper: Shopper | None = None,
    ) -> np.ndarray:
        """One score per candidate (higher = better); raises redis.RedisError when Redis is down.

        `shopper`: the user's and session's rows if already read at `at` (the API reads them first).
        """
        inputs = read_inputs(store, user_id=user_id, session_id=session_id, candidates=np.asarray(candidates, np.int64),
                             als_scores=np.asarray(als_scores, np.float32), at=time.time() if at is None else at,
                             catalogue=catalogue, neighbours=neighbours, cache=self.cache, shopper=shopper)  # fmt: skip
        return self.model.score(candidate_features(inputs))
