"""The ranker at request time: read the online features the model was trained on, score the candidates.

`read_inputs` makes every Redis read a request needs in ONE round trip (the
user's two-minute window, the session, the profile, and five product groups for
every candidate) through `OnlineStore.read_groups`, so the values and buckets
are exactly what `OnlineStore.read_many` returns;
`Ranker.rerank` turns them into `candidate_features` and scores them. A Redis
outage raises `redis.RedisError`: the API's fallback chain takes over.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

#: The cache's refresher re-reads the hot products every this share of the cache age: before their rows are too old.
REFRESH_SHARE = 0.6

#: (RankInputs field, group, how far back the reader looks) for the per-candidate groups.
PRODUCT_READS: tuple[tuple[str, FeatureGroup, float], ...] = (
    ("product_2m", PRODUCT_2M, 0.0),
    ("product_1h", PRODUCT_1H, 0.0),
    ("product_1h_prev", PRODUCT_1H, PRODUCT_1H.length.total_seconds()),
    ("product_1d", PRODUCT_1D, 0.0),
    ("product_1d_prev", PRODUCT_1D, PRODUCT_1D.length.total_seconds()),
)


class ProductFeatureCache:
    """Product rows of the products the API asks for, kept fresh ahead of the requests.

    A product's windows do not depend on who asks, and a busy API asks for the same
    popular products many times a second: served from here they cost a dict lookup
    instead of a Redis read and its decoding. Rows are kept per (read, bucket) in a
    generation that lives `seconds`. A background thread, started by the first read,
    re-reads the products asked for in each of the last two periods (at most `hot_rows`) every
    `REFRESH_SHARE * seconds`, for the bucket of now and the one `seconds` ahead, in
    one round trip, and swaps in the new generations. So a request reads from Redis only the
    products nobody asked for lately: an expiring generation or a window sliding to
    its next bucket no longer sends a burst of requests to Redis for every row
    (measured: that burst was the p90 and p99 of `/recommendations`).

    The price is freshness: a product feature may be up to `seconds` old (user and
    session features are always read). The thread stops after `idle_seconds`
    without a read, and `close` stops it; 0 seconds turns the cache off.
    """

    def __init__(self, seconds: float = 1.0, max_rows: int = 100_000, hot_rows: int = 20_000,
                 idle_seconds: float = 10.0) -> None:  # fmt: skip
        self.seconds = seconds
        self.max_rows = max_rows
        self.hot_rows = hot_rows
        self.idle_seconds = idle_seconds
        self._generations: dict[tuple[str, int], tuple[float, dict[int, dict | None]]] = {}
        self._asked: set[int] = set()  # products asked for since the last refresh
        self._asked_before: set[int] = set()  # ... and in the refresh period before it
        self._last_read = 0.0
        self._store: OnlineStore | None = None
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
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
                self._asked.update(ids)
                self._last_read, self._store = now, store
                self._start_refresher()
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

    def _start_refresher(self) -> None:
        if self._refresher is None or not self._refresher.is_alive():
            self._stop.clear()
            self._refresher = threading.Thread(target=self._refresh_forever, name="product-feature-cache", daemon=True)
            self._refresher.start()

    def _refresh_forever(self) -> None:
        while not self._stop.wait(self.seconds * REFRESH_SHARE):
            with self._lock:
                if time.monotonic() - self._last_read > self.idle_seconds:
                    self._refresher = None
                    return  # the next read starts a new one
                # asked for in both of the last two periods: steadily wanted products, whose refresh
                # saves reads; at October scale most products are asked for once and would only cost Redis
                hot = self._asked & self._asked_before
                self._asked_before, self._asked = self._asked, set()
                store = self._store
            if hot and store is not None:
                try:
                    self.refresh(store, list(hot)[: self.hot_rows])
                except Exception:  # a Redis hiccup: requests read what they miss until the next round
                    log.warning("product feature refresh failed", exc_info=True)

    def refresh(self, store: OnlineStore, ids: list[int], at: float | None = None) -> None:
        """Read `ids` for the buckets of `at` (default now) and `seconds` later; they replace those generations."""
        born = time.monotonic()
        at = time.time() if at is None else at
        keys, requests = [], []
        for name, group, back in PRODUCT_READS:
            for when in dict.fromkeys((at, at + self.seconds)):
                key = (name, bucket_for_read(group, when - back))
                if key not in keys:
                    keys.append(key)
                    requests.append((group, ids, when - back))
        replies = store.read_groups(requests)
        with self._lock:
            for key, rows in zip(keys, replies):
                self._generations[key] = (born, dict(zip(ids, rows)))

    def close(self) -> None:
        """Stop the background refresher (reads still work: they start it again)."""
        self._stop.set()


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
        model = ranker_model.load(artifacts, version)
        # One thread per prediction: the API runs requests side by side, and a second OpenMP
        # thread on 200 rows costs more CPU than it saves time (measured: 1.9 vs 2.4 ms CPU).
        model.booster.set_param({"nthread": 1})
        return cls(model, ProductFeatureCache(product_cache_seconds))

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
