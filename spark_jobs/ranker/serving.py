"""The ranker at request time: read the online features the model was trained on, score the candidates.

`read_inputs` makes every Redis read a request needs in at most ONE round trip
(the user's two-minute window, the session, the profile, and the five product
groups of the candidates it does not hold fresh) through `OnlineStore.read_groups`,
so the values and buckets are exactly what `OnlineStore.read_many` returns;
`Ranker.rerank` turns them into `candidate_features` and scores them. A Redis
outage raises `redis.RedisError`: the API's fallback chain takes over.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.artifacts import Artifacts
from feature_store.definitions import SESSION_FEATURES, USER_2M, USER_PROFILE, FeatureGroup
from feature_store.online import (
    KEPT_COMBINED,
    AheadRows,
    Changes,
    ChangesSince,
    FeedPosition,
    OnlineStore,
    ReadAhead,
    Request,
    Shopper,
    ahead_points,
    decode_features,
)
from spark_jobs.candidates.catalogue import Catalogue
from spark_jobs.candidates.item_item import ItemNeighbours
from spark_jobs.ranker import model as ranker_model
from spark_jobs.ranker.features import (
    PRODUCT_FEATURES,
    PRODUCT_READS,
    PRODUCT_TIERS,
    ProductRows,
    ProductTier,
    RankInputs,
    candidate_features,
    product_features,
    tier_features,
)

Read = tuple[FeatureGroup, Sequence[Any], float]
#: How often a busy cache reads the change feed when it has no stale row to read (seconds): a request in
#: between serves rows that may lag Redis by that much.
FEED_EVERY = 0.01


def _feed_group(tier: ProductTier) -> FeatureGroup | None:
    """The group whose change feed tells when a tier's rows change: a tier read from one group kept combined."""
    groups = {group for name, group, _ in PRODUCT_READS if name in tier.reads}
    group = groups.pop() if len(groups) == 1 else None
    return group if group is not None and group.name in KEPT_COMBINED else None


def _tier_reads(at: float, wanted: Sequence[tuple[ProductTier, Sequence[int]]],
                ahead: ProductTier | None = None) -> list[Request]:  # fmt: skip
    """The `read_groups` requests of each (tier, products) in `wanted`, in order; the `ahead` tier's
    (one read of a group kept combined) as a `ReadAhead`."""
    reads = {name: (group, back) for name, group, back in PRODUCT_READS}
    return [ReadAhead(reads[name][0], ids, at - reads[name][1]) if tier is ahead else
            (reads[name][0], ids, at - reads[name][1]) for tier, ids in wanted for name in tier.reads]  # fmt: skip


def _tier_rows(wanted: Sequence[tuple[ProductTier, Sequence[int]]], replies: Sequence[Any]) -> list[ProductRows]:
    """Per (tier, products) of `wanted`, ProductRows with the tier's raw replies filled (the windows
    of an `AheadRows`) and the other reads empty."""
    rows, position = [], 0
    replies = [reply.rows if isinstance(reply, AheadRows) else reply for reply in replies]
    for tier, ids in wanted:
        filled = dict(zip(tier.reads, replies[position : position + len(tier.reads)]))
        position += len(tier.reads)
        rows.append(ProductRows(**{name: filled.get(name) or [None] * len(ids) for name, _, _ in PRODUCT_READS}))
    return rows


def _decoded(first: Sequence[Read], replies: Sequence[list]) -> list:
    return [[decode_features(group, row) if row is not None else None for row in reply]
            for (group, _, _), reply in zip(first, replies)]  # fmt: skip


def read_product_rows(store: OnlineStore, products: Sequence[int], at: float, first: Sequence[Read] = ()) -> tuple[list, ProductRows]:
    """The `PRODUCT_READS` rows of `products` at `at`, as Redis holds them (bytes: `product_features` wants
    numbers only, and decoding 1,000 rows into typed dicts was most of an uncached read's CPU), in the same
    round trip as the reads `first` (their replies come first, decoded like `read_many`'s)."""
    wanted = [(tier, list(products)) for tier in PRODUCT_TIERS]
    replies = store.read_groups([*first, *_tier_reads(at, wanted)], raw=True)
    tiers = _tier_rows(wanted, replies[len(first) :])
    return _decoded(first, replies), ProductRows(**{name: getattr(rows, name) for tier, rows in zip(PRODUCT_TIERS, tiers)
                                                    for name in tier.reads})  # fmt: skip


@dataclass(eq=False)
class Refresh:
    """What a block of products lacks in a `ProductFeatureCache`: `reads` to make (raw) and where the answers go.

    Once `filled` (at once when nothing was stale), `block` holds every product's row.
    """

    products: np.ndarray
    at: float
    catalogue: Catalogue
    slots: np.ndarray
    block: np.ndarray  #: the cached rows (a copy); stale tiers are filled in by `ProductFeatureCache.apply`
    stale: list[tuple[int, np.ndarray]]  #: (tier index, positions in `products`) of every tier with stale rows
    reads: list[Request]  #: the change feed first (when the cache follows one), then the stale tiers' reads
    cache: ProductFeatureCache
    filled: bool = False

    def fill(self, replies: Sequence[list]) -> np.ndarray:
        """`ProductFeatureCache.apply` of these replies (raw) to `reads`."""
        return self.cache.apply(self, replies)


#: How many of its periods old a row may get while a request defers it (`ProductFeatureCache.long_rows`).
LATE_PERIODS = 4


def _defer_late_rows(fresh: np.ndarray, read_for: np.ndarray, usable: np.ndarray, limit: int) -> None:
    """Mark fresh, in place, the stale rows that are `usable` (read a little earlier: see
    `ProductFeatureCache.long_rows`) past the `limit` oldest; a request reads those `limit` and every
    stale row that is not usable."""
    stale = np.flatnonzero(~fresh)
    if len(stale) <= limit:
        return
    late = stale[usable[stale]]
    room = limit - (len(stale) - len(late))  # what the rows that must be read leave
    if room < len(late):
        oldest_first = late[np.argsort(read_for[late], kind="stable")]
        fresh[oldest_first[max(room, 0) :]] = True


class ProductFeatureCache:
    """`product_features` rows of recently read products, each tier of them used for a while.

    A product's features do not depend on who asks, and a busy API asks for the same
    popular products many times a second: served from here they cost a numpy gather
    instead of five Redis reads, their decoding and the arithmetic. How long a tier is
    used depends on how fast its windows move:

    - The two-minute tier follows the change feed of its windows (`ChangesSince`): each
      round trip that reads products also reads which products the stream merged since
      the previous one, and those rows are dropped. A row is used until its product
      changes or its window ends, so it is as fresh as the previous round trip, not a
      fixed period; a row read early in a slide step is read once more after the
      product's point of the step (`ahead_points`), the read that has Redis build the
      product's next window and returns it (`ReadAhead`): that row takes over at the
      boundary, until the product changes or its point in the new step. Without a feed
      (no writer logs one yet), or when the feed was last read over `seconds` ago, a row
      is used for `seconds` (one stream trigger).
    - The hourly and daily counters are used for `long_seconds` (30 s is under 1% of an
      hour; at the October-2019 scale, where 200 candidates rarely repeat within a second,
      they were four of the five reads of every product). A request reads at most
      `long_rows` of them again while they are under LATE_PERIODS periods old, the oldest
      first, and uses the others a little longer: a user's candidates are read together, so
      they came due together, and the one request that read all 200 again took 14-19 ms
      (October scale, in process), the slowest 1-3% of requests. Rows past that age, and
      rows never read, are always read.

    Within `seconds` after it was read a row is used even across a window boundary, as
    before the feed. (Spreading the expiry to 75-100% of the period, drawn per product,
    made one client's p50 at the October-2019 scale worse, 2.2-2.3 -> 2.8-3.3 ms: more
    requests paid for partial refreshes.) User and session features are always read.
    The rows sit in one array over the catalogue (a product's catalogue row is its
    slot): a few MB at the October-2019 scale. 0 seconds turns a tier's cache off.

    `block` reads what is stale itself; `plan` and `apply` let a caller put those reads
    into a round trip it makes anyway (the API's read of the shopper).
    """

    def __init__(self, seconds: float = 1.0, long_seconds: float = 30.0, long_rows: int = 25) -> None:
        self.seconds = seconds
        self.long_seconds = long_seconds
        self.long_rows = long_rows
        self._max_age = np.array([{"two_minute": seconds, "hour_and_day": long_seconds}[t.name] for t in PRODUCT_TIERS])
        #: rows of each tier read again per request while under LATE_PERIODS periods old (0: no limit)
        self._rows_per_request = [long_rows if t.name == "hour_and_day" else 0 for t in PRODUCT_TIERS]
        self._columns = [np.array([PRODUCT_FEATURES.index(f) for f in tier.features]) for tier in PRODUCT_TIERS]
        #: (tier index, group) of the tier that follows a change feed, if any (and if cached at all)
        self._feed = next(((t, group) for t, tier in enumerate(PRODUCT_TIERS)
                           if (group := _feed_group(tier)) is not None and self._max_age[t] > 0), None)  # fmt: skip
        self._position = FeedPosition()  #: every change up to here has dropped its rows
        self._synced_at = -math.inf  #: the latest `at` whose round trip read the feed
        self._catalogue: Catalogue | None = None
        self._values = np.empty((0, len(PRODUCT_FEATURES)), np.float32)
        # Per slot, gathered at once: the `at` each tier was read for, until when each tier serves for its
        # period, until when the feed's tier serves following the feed (-inf: dropped), and from when
        # the feed tier's next window (in `_next_values`) serves (the next slide step; -inf: none).
        tiers = len(PRODUCT_TIERS)
        self._read_for, self._until, self._feed_until = slice(0, tiers), slice(tiers, 2 * tiers), 2 * tiers
        self._next_from = 2 * tiers + 1
        self._times = np.empty((0, 2 * tiers + 2))
        self._next_values = np.empty((0, 0), np.float32)
        self._points = np.empty(0)  #: each slot's `ahead_points`
        self._lock = threading.Lock()  # requests may come from a thread pool

    def _slots(self, catalogue: Catalogue, products: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Each product's slot (-1: not in the catalogue, never cached): its catalogue row (`rows` if known)."""
        if catalogue is not self._catalogue:  # a new candidates version: start over
            n = max(len(catalogue.product_ids), 1)  # one slot at least: the gather below needs a row 0
            self._catalogue = catalogue
            self._values = np.empty((n, len(PRODUCT_FEATURES)), np.float32)
            self._times = np.full((n, self._times.shape[1]), -np.inf)
            if self._feed is not None:
                self._next_values = np.empty((n, len(self._columns[self._feed[0]])), np.float32)
            self._points = np.ones(n)
            self._points[: len(catalogue.product_ids)] = ahead_points(catalogue.product_ids)
        return catalogue.index_of(products) if rows is None else rows

    def _following(self, at: float) -> bool:
        """Whether the feed was followed recently enough (within `seconds`) for a request at `at` to rely on it."""
        return self._feed is not None and bool(self._position.epoch) and at - self._synced_at < self._max_age[self._feed[0]]

    def plan(self, products: np.ndarray, at: float, catalogue: Catalogue, rows: np.ndarray | None = None) -> Refresh:
        """The cached rows of `products` for a request at `at`, and the reads their stale tiers need
        (`rows`: the products' catalogue rows, when the caller knows them)."""
        products = np.asarray(products, np.int64)
        with self._lock:
            slots = self._slots(catalogue, products, rows)
            cached = slots >= 0
            every = bool(cached.all())
            safe = slots if every else np.where(cached, slots, 0)
            times = self._times[safe]
            following = self._following(at)
            if following:
                times = self._next_window(at, safe, times)
            read_for = times[:, self._read_for]
            # never a tier read for a later time; one read for this very time always serves (even with a 0-s period)
            fresh = (read_for <= at) & ((at < times[:, self._until]) | (read_for == at))
            if following:
                t = self._feed[0]  # type: ignore[index]
                fresh[:, t] |= (read_for[:, t] <= at) & (at < times[:, self._feed_until])
            if not every:
                fresh[~cached] = False
            for t, limit in enumerate(self._rows_per_request):
                if limit:
                    since = at - LATE_PERIODS * self._max_age[t]
                    usable = (since <= read_for[:, t]) & (read_for[:, t] <= at) & cached
                    _defer_late_rows(fresh[:, t], read_for[:, t], usable, limit)
            block = self._values[safe]  # a copy: tiers read below are filled in
            nothing_stale = bool(fresh.all())
            feed: list[Request] = []
            # The feed is read with the rows of its tier (they are kept only then), else every FEED_EVERY.
            if self._feed is not None and (at - self._synced_at >= FEED_EVERY or not fresh[:, self._feed[0]].all()):
                feed = [ChangesSince(self._feed[1], self._position)]
        if nothing_stale:
            return Refresh(products, at, catalogue, slots, block, [], feed, self, filled=True)
        stale = [(t, positions) for t in range(len(PRODUCT_TIERS)) if len(positions := np.flatnonzero(~fresh[:, t]))]
        ahead = PRODUCT_TIERS[self._feed[0]] if self._feed is not None else None
        reads = feed + _tier_reads(at, [(PRODUCT_TIERS[t], products[p].tolist()) for t, p in stale], ahead)
        return Refresh(products, at, catalogue, slots, block, stale, reads, self)

    def _next_window(self, at: float, slots: np.ndarray, times: np.ndarray) -> np.ndarray:
        """`times` of `slots` (gathered), after the next windows due at `at` took over their feed tier's rows
        (under the lock): from the slide step they were read for until the product's point in it."""
        assert self._feed is not None
        next_from = times[:, self._next_from]
        due = (next_from <= at) & (at < next_from + self._feed[1].slide.total_seconds())
        if not due.any():
            return times
        promoted = np.unique(slots[due])
        self._values[promoted[:, None], self._columns[self._feed[0]]] = self._next_values[promoted]
        self._times[promoted, self._feed_until] = self._serves_until(self._times[promoted, self._next_from], promoted)
        self._times[promoted, self._next_from] = -np.inf
        return self._times[slots]

    def apply(self, refresh: Refresh, replies: Sequence[Any]) -> np.ndarray:
        """The `product_features` of the planned products, from the cache and the raw `replies` to `refresh.reads`
        (kept for the next requests)."""
        products, block, slots = refresh.products, refresh.block, refresh.slots
        changes: Changes | None = None
        if refresh.reads and isinstance(refresh.reads[0], ChangesSince):
            changes, replies = replies[0], replies[1:]
        if not refresh.stale:
            if changes is not None:
                with self._lock:
                    self._follow(changes, refresh.at)
            refresh.filled = True
            return block
        wanted = [(PRODUCT_TIERS[t], products[p].tolist()) for t, p in refresh.stale]
        ahead = np.empty(0, np.int64), np.empty((0, 0), np.float32)  # (positions, features) of next windows read
        first_reply = 0
        for (t, positions), rows in zip(refresh.stale, _tier_rows(wanted, replies)):
            tier, columns = PRODUCT_TIERS[t], self._columns[t]
            reply = replies[first_reply]
            first_reply += len(tier.reads)
            computed = positions
            if isinstance(reply, AheadRows) and reply.following:  # the feed's tier (one read): its next windows
                nexts = positions[np.fromiter(reply.following, np.int64, len(reply.following))]
                computed = np.concatenate([positions, nexts])  # in the same pass: its fixed cost was most of it
                rows = replace(ProductRows.missing(len(computed)), **{tier.reads[0]: [*reply.rows, *reply.following.values()]})
            # the stale tier's features alone: the other tier's rows were not read (computing them took
            # a third of a 200-product refresh at October scale)
            features = tier_features(tier, products[computed], refresh.catalogue, rows, slots[computed])
            block[positions[:, None], columns] = features[: len(positions)]
            if len(computed) > len(positions):
                ahead = nexts, features[len(positions) :]
        with self._lock:
            if changes is not None:
                self._follow(changes, refresh.at)
            if refresh.catalogue is self._catalogue:
                for t, positions in refresh.stale:
                    following = self._feed is not None and t == self._feed[0]
                    if following and (changes is None or changes.now != self._position):
                        continue  # read before changes another request has dropped since: it may miss one of them
                    keep = positions[slots[positions] >= 0]
                    keep = keep[self._times[slots[keep], t] < refresh.at]  # a concurrent request may have read later
                    kept = slots[keep]
                    self._values[kept[:, None], self._columns[t]] = block[keep[:, None], self._columns[t]]
                    self._times[kept, t] = refresh.at
                    self._times[kept, self._until.start + t] = refresh.at + self._max_age[t]
                    if following:
                        self._times[kept, self._feed_until] = self._serves_until(refresh.at, kept)
                        self._keep_next_windows(refresh, keep, *ahead)
        refresh.filled = True
        return block

    def _keep_next_windows(self, refresh: Refresh, keep: np.ndarray, positions: np.ndarray,
                           features: np.ndarray) -> None:  # fmt: skip
        """Keep the next windows read (`features` of the products at `positions`) of the products at `keep`,
        for the next slide step (under the lock); the others at `keep` have none."""
        assert self._feed is not None
        index = np.full(len(refresh.products), -1)
        index[positions] = np.arange(len(positions))
        found = index[keep]
        has = found >= 0
        if has.any():
            self._next_values[refresh.slots[keep[has]]] = features[found[has]]
        slide = self._feed[1].slide.total_seconds()
        next_step = math.floor(refresh.at / slide) * slide + slide
        self._times[refresh.slots[keep], self._next_from] = np.where(has, next_step, -np.inf)

    def _serves_until(self, at: float | np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Until when the feed's tier of `slots`, read at `at` (one time, or one per slot), serves while the
        feed reports no change: the end of the slide step, but the product's point of the step when read
        before it (the read after the point has Redis build the product's next window, `ahead_points`;
        without it every product would be combined at once at the boundary: p99 63-66 ms at the
        October-2019 scale)."""
        assert self._feed is not None
        slide = self._feed[1].slide.total_seconds()  # the same window: the same slide step (see bucket_for_read)
        start = np.floor(np.divide(at, slide)) * slide
        point = start + self._points[slots] * slide
        return np.where(at < point, point, start + slide)

    def _follow(self, changes: Changes, at: float) -> None:
        """Drop the rows `changes` reports changed, and move the position on (under the lock)."""
        assert self._feed is not None
        dropped = [self._feed[0], self._until.start + self._feed[0], self._feed_until, self._next_from]
        if changes.complete and changes.since.epoch == self._position.epoch:
            if self._catalogue is not None and changes.entity_ids:
                slots = self._catalogue.index_of(np.array(changes.entity_ids, np.int64))
                self._times[np.ix_(slots[slots >= 0], dropped)] = -np.inf
            if changes.now.seq > self._position.seq:
                self._position = changes.now
        else:  # a new epoch, or entries missed: the feed cannot say which rows changed
            self._times[:, dropped] = -np.inf
            self._position = changes.now
        self._synced_at = max(self._synced_at, at)

    def block(self, store: OnlineStore, products: np.ndarray, at: float, catalogue: Catalogue,
              first: Sequence[Read] = ()) -> tuple[list, np.ndarray]:  # fmt: skip
        """(replies to `first`, the `product_features` of `products` at `at`), reading from Redis only the tiers
        of products without a fresh copy, and the change feed, in the same round trip as `first` (none at all
        when there is no `first` and every row is fresh)."""
        products = np.asarray(products, np.int64)
        if (self._max_age <= 0).all():
            replies, rows = read_product_rows(store, products.tolist(), at, first)
            return replies, product_features(products, catalogue, rows)
        refresh = self.plan(products, at, catalogue)
        if not refresh.stale and not first:
            return [], refresh.block  # no round trip at all (the next one follows the change feed)
        replies = store.read_groups([*first, *refresh.reads], raw=True)
        return _decoded(first, replies), self.apply(refresh, replies[len(first) :])


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
    products: np.ndarray | None = None,
    catalogue_rows: np.ndarray | None = None,
) -> RankInputs:
    """Everything `candidate_features` needs, read from Redis in at most one round trip (`OnlineStore.read_groups`).

    The product rows come from `cache` when it holds them fresh (see ProductFeatureCache),
    or from `products` (the candidates' `product_features` rows) when the caller has them;
    the user's and session's rows from `shopper` when the caller has read them at `at`;
    `catalogue_rows`: the candidates' catalogue rows, when the caller has looked them up.
    """
    cache = cache or ProductFeatureCache(0, 0)
    user_reads: list[Read] = []
    if shopper is None:
        user_reads = [(USER_2M, [user_id], at), (USER_PROFILE, [user_id], at),
                      (SESSION_FEATURES, [session_id] if session_id else [], at)]  # fmt: skip
    if products is None:
        replies, products = cache.block(store, candidates, at, catalogue, user_reads)
    else:
        replies = store.read_groups(user_reads) if user_reads else []
    if shopper is None:
        (user_2m,), (profile,), session = replies
        shopper = Shopper(profile=profile, user_2m=user_2m, session=session[0] if session else None)
    return RankInputs(at=at, candidates=candidates, als_scores=als_scores, user_2m=shopper.user_2m,
                      session=shopper.session, profile=shopper.profile, catalogue=catalogue, neighbours=neighbours,
                      products=products, catalogue_rows=catalogue_rows)  # fmt: skip


@dataclass(eq=False)
class Ranker:
    """A loaded ranker artifact, ready to score candidates."""

    model: ranker_model.RankerModel
    cache: ProductFeatureCache = field(default_factory=ProductFeatureCache)

    @property
    def version(self) -> str:
        return self.model.version or "unversioned"

    @property
    def compiled(self) -> bool:
        """True when the trees run compiled to C (see `boosters.CompiledPredictor`)."""
        return self.model.compiled

    @classmethod
    def load(cls, artifacts: Artifacts, version: str | None = None, *, product_cache_seconds: float = 1.0,
             product_cache_long_seconds: float = 30.0, product_cache_long_rows: int = 25,
             compiled_dir: Path | None = None) -> Ranker:  # fmt: skip
        """The latest (or given) ranker version; ArtifactNotFound when none, FeatureMismatch when stale.
        With `compiled_dir`, its trees are compiled to C there (see `boosters.CompiledPredictor`)."""
        return cls(ranker_model.load(artifacts, version, compiled_dir=compiled_dir),
                   ProductFeatureCache(product_cache_seconds, product_cache_long_seconds, product_cache_long_rows))

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
        products: np.ndarray | None = None,
        catalogue_rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """One score per candidate (higher = better); raises redis.RedisError when Redis is down.

        `shopper`: the user's and session's rows if already read at `at` (the API reads them first);
        `products`, `catalogue_rows`: the candidates' product rows and catalogue rows if already read
        (the API's prefetch, see `Refresh`).
        """
        inputs = read_inputs(store, user_id=user_id, session_id=session_id, candidates=np.asarray(candidates, np.int64),
                             als_scores=np.asarray(als_scores, np.float32), at=time.time() if at is None else at,
                             catalogue=catalogue, neighbours=neighbours, cache=self.cache, shopper=shopper,
                             products=products, catalogue_rows=catalogue_rows)  # fmt: skip
        return self.model.score(candidate_features(inputs))
