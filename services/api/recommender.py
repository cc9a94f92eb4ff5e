"""GET /recommendations at the edge: read the online signals, build each source's step, walk the chain.

The decisions (order, skips, scoring, reasons) are the pure functions of
`services.api.recommend`; this module only fetches what they need from Redis
and the loaded artifacts, and turns the answer into the response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pybreaker
import redis

from feature_store.definitions import SESSION_FEATURES, USER_2M, USER_PROFILE
from feature_store.online import OnlineStore, Shopper
from services.api import recommend as rec
from services.api.errors import ArtifactMissing
from services.api.metrics import Metrics
from services.api.recommend import Ranked, Skip, SkipReason, Source
from services.api.registry import CandidateSet, Registry, Snapshot
from services.api.schemas import Fallback, RecommendedItem, Recommendations

if TYPE_CHECKING:  # the ranker (and XGBoost) load with its artifact, as in the registry
    from spark_jobs.ranker.serving import Refresh

log = logging.getLogger(__name__)

#: Popular lists rank best sellers first, then most viewed to fill a short list.
POPULAR_METRICS = ("purchase", "view")
#: The neighbours the session path and the ranker use.
SESSION_NEIGHBOURS = "also_viewed"


@dataclass
class OnlineSignals:
    """What Redis says about the user and the session right now."""

    shopper: Shopper

    @property
    def bot(self) -> bool:
        return self.shopper.bot

    @property
    def profile(self) -> dict[str, Any] | None:
        return self.shopper.profile

    @property
    def user_2m(self) -> dict[str, Any] | None:
        return self.shopper.user_2m

    @property
    def session(self) -> dict[str, Any] | None:
        return self.shopper.session

    @property
    def recent_products(self) -> list[int]:
        return list((self.session or {}).get("recent_products") or [])

    @property
    def session_purchases(self) -> list[int]:
        """Purchases of this very session (not in the profile yet)."""
        if self.session is None:
            return []
        return [int(e["product_id"]) for e in self.shopper.session_events if str(e.get("event_type")) == "purchase"]

    @property
    def bought(self) -> set[int]:
        """Products to leave out: bought recently (user_profile) or in this session."""
        return {int(p) for p in (self.profile or {}).get("bought_products") or []} | set(self.session_purchases)


#: Calls a function that uses Redis: directly, or through a circuit breaker.
Guard = Callable[..., Any]


def _unguarded(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


def read_signals(
    store: OnlineStore, user_id: int, session_id: str | None, at: float, metrics: Metrics | None = None,
    prefetch: Refresh | None = None,
) -> OnlineSignals:  # fmt: skip
    """Bot flag, profile, current two-minute window and session, in one round trip (raises redis.RedisError
    when Redis is down); with `prefetch`, the ranker's stale product rows too, filled into its cache."""
    shopper, replies = store.read_shopper_and(user_id, session_id, at, prefetch.reads if prefetch else ())
    if prefetch is not None and prefetch.reads:
        _best_effort("filling the ranker's product rows", prefetch.fill, replies)
    signals = OnlineSignals(shopper)
    if metrics is not None:
        for group, values in ((USER_PROFILE, signals.profile), (USER_2M, signals.user_2m), (SESSION_FEATURES, signals.session)):
            metrics.observe_feature(group.name, values, at)
    return signals


def _best_effort(what: str, function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)`, or None (logged) if it raises: a bug in an optimisation must not cost the answer."""
    try:
        return function(*args)
    except Exception:
        log.exception("%s failed; answering without it", what)
        return None


def ranker_prefetch(snapshot: Snapshot, user_id: int, pool: int, at: float) -> Refresh | None:
    """The ranker's product rows of the user's ALS candidates: cached ones, and the stale ones to read along
    with the shopper (one round trip per request instead of two; the filters that come later only drop
    candidates, and the ranker takes its rows from here). None when there is no ranker or no ALS list."""
    ranker, cands = snapshot.ranker, snapshot.candidates
    if ranker is None or cands is None:
        return None
    top = cands.als_top(user_id, pool)
    if top is None:
        return None
    return ranker.cache.plan(top.ids, at, cands.catalogue, top.catalogue_rows)


class _Request:
    """The steps of one request; the ALS candidates are computed once and shared by ranker and ALS."""

    def __init__(self, snapshot: Snapshot, store: OnlineStore, *, user_id: int, session_id: str | None,
                 category: str | None, k: int, pool: int, at: float, signals: OnlineSignals | None,
                 guard: Guard, prefetch: Refresh | None = None) -> None:  # fmt: skip
        assert snapshot.candidates is not None
        self.snapshot = snapshot
        self.cands: CandidateSet = snapshot.candidates
        self.store = store
        self.user_id, self.session_id, self.category = user_id, session_id, category
        self.k, self.pool, self.at, self.signals, self.guard = k, pool, at, signals, guard
        self.prefetch = prefetch
        self.exclude = np.fromiter(sorted(signals.bought), np.int64) if signals and not signals.bot else np.empty(0, np.int64)
        self.taste = rec.Taste.from_profile(signals.profile if signals else None)
        self._als: tuple[np.ndarray, np.ndarray] | None = None
        self._als_rows: np.ndarray | None = None  #: the prefetched product rows of `_als`' candidates
        self._als_slots: np.ndarray | None = None  #: and their catalogue rows
        self._described: tuple[np.ndarray, list[dict[str, Any] | None]] | None = None  #: see `describe`

    # --- helpers ---------------------------------------------------------------

    def _personal(self) -> OnlineSignals:
        """The signals, when personalising is allowed (Redis answered, not a bot)."""
        if self.signals is None:
            raise Skip(SkipReason.ONLINE_STORE_DOWN)
        if self.signals.bot:
            raise Skip(SkipReason.BOT)
        return self.signals

    def _filtered(self, product_ids: np.ndarray) -> np.ndarray:
        mask = rec.category_mask(self.cands.category_codes_of(product_ids), self.category) if self.category else None
        return rec.keep(product_ids, mask, self.exclude)

    def _als_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        if self._als is None:
            self._personal()
            top = self.cands.als_top(self.user_id, self.pool)
            if top is None:
                raise Skip(SkipReason.UNKNOWN_USER)
            ids, scores = top.ids, top.scores
            kept = self._filtered(ids)
            self._als = (ids[kept], scores[kept])
            prefetch = self.prefetch
            if prefetch is not None and prefetch.filled and np.array_equal(prefetch.products, ids):
                self._als_rows, self._als_slots = prefetch.block[kept], prefetch.slots[kept]
        if not len(self._als[0]):
            raise Skip(SkipReason.EMPTY, "no ALS candidate left after the filters")
        return self._als

    def describe(self, product_ids: np.ndarray) -> list[dict[str, Any] | None]:
        """`describe_many`, kept for the answer: the personal steps describe the very products they answer with."""
        if self._described is None or not np.array_equal(self._described[0], product_ids):
            self._described = (product_ids, self.cands.describe_many(product_ids))
        return self._described[1]

    def _personal_ranked(self, ids: np.ndarray, scores: np.ndarray) -> Ranked:
        # The chain answers with the first k: reasons for the other candidates would be thrown away.
        ids, scores = ids[: self.k], scores[: self.k]
        infos = self.describe(ids)
        return Ranked(ids, scores, tuple(rec.personal_reason(info, self.taste) for info in infos))

    # --- the steps -----------------------------------------------------------------

    def ranker(self) -> Ranked:
        if self.snapshot.ranker is None:
            raise Skip(SkipReason.NO_ARTIFACT, "no ranker artifact")
        ids, als_scores = self._als_candidates()
        try:
            scores = self.guard(
                self.snapshot.ranker.rerank,  # spark_jobs.ranker.serving.Ranker
                self.store, user_id=self.user_id, session_id=self.session_id, candidates=ids,
                als_scores=als_scores, at=self.at, catalogue=self.cands.catalogue,
                neighbours=self.cands.neighbours[SESSION_NEIGHBOURS], shopper=self._personal().shopper,
                products=self._als_rows, catalogue_rows=self._als_slots,
            )  # fmt: skip
        except (redis.RedisError, pybreaker.CircuitBreakerError) as error:
            raise Skip(SkipReason.ONLINE_STORE_DOWN, str(error)) from None
        except Exception as error:  # a ranker bug must cost the rerank, not the answer
            log.exception("ranker failed for user %s", self.user_id)
            raise Skip(SkipReason.FAILED, f"{type(error).__name__}: {error}") from None
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != ids.shape:
            raise Skip(SkipReason.FAILED, f"ranker returned {scores.shape} scores for {ids.shape} candidates")
        order = np.lexsort((np.arange(len(ids)), -scores))  # ties keep the ALS order
        return self._personal_ranked(ids[order], scores[order])

    def als(self) -> Ranked:
        ids, scores = self._als_candidates()
        return self._personal_ranked(ids, scores)

    def session_item_item(self) -> Ranked:
        signals = self._personal()
        if not self.session_id:
            raise Skip(SkipReason.NO_SESSION, "no session_id given")
        recent = signals.recent_products
        if not recent:
            raise Skip(SkipReason.NO_SESSION, "the session has no recent products in the online store")
        neighbours = self.cands.neighbours[SESSION_NEIGHBOURS]
        ids, scores, seeds = rec.session_votes(neighbours.similarity, neighbours.item_ids, recent, self.pool)
        kept = self._filtered(ids)
        ids, scores, seeds = ids[kept], scores[kept], seeds[kept]
        seed_info = {int(s): info for s, info in zip(np.unique(seeds).tolist(), self.cands.describe_many(np.unique(seeds)))}
        return Ranked(ids, scores, tuple(rec.session_reason(int(s), seed_info.get(int(s))) for s in seeds.tolist()))

    def _last_category(self) -> str | None:
        """The requested category, else the user's latest one (session, two-minute window, profile)."""
        if self.category:
            return self.category
        signals = self._personal()
        if signals.recent_products:
            code = self.cands.category_codes_of(np.asarray(signals.recent_products[-1:], np.int64))[0]
            if code:
                return code
        if signals.user_2m and signals.user_2m.get("last_category"):
            return str(signals.user_2m["last_category"])
        shares = (signals.profile or {}).get("category_shares") or {}
        for category_id, _ in sorted(shares.items(), key=lambda kv: -float(kv[1])):
            code = self.cands.category_codes.get(int(category_id))
            if code:
                return code
        return None

    def _popular(self, category: str | None) -> Ranked:
        popular = self.cands.popular
        window = popular.default_window or 0
        top = popular.top(category=category, window_days=window, metrics=POPULAR_METRICS, k=self.pool, exclude=self.exclude)
        kept = self._filtered(top.product_ids)
        reasons = tuple(rec.popular_reason(category, str(m), window) for m in top.metric[kept].tolist())
        return Ranked(top.product_ids[kept], top.users[kept].astype(np.float32), reasons)

    def category_popular(self) -> Ranked:
        try:
            category = self._last_category()
        except Skip as skip:
            if skip.reason is SkipReason.BOT:  # a bot's own history says nothing: only a requested category
                raise Skip(SkipReason.NO_CATEGORY, "no category requested (the user is flagged as a bot)") from None
            raise
        if category is None:
            raise Skip(SkipReason.NO_CATEGORY, "no category requested and none recent for the user")
        return self._popular(category)

    def global_popular(self) -> Ranked:
        return self._popular(None)

    def steps(self) -> dict[Source, rec.Step]:
        return {
            Source.RANKER: self.ranker,
            Source.ALS: self.als,
            Source.SESSION_ITEM_ITEM: self.session_item_item,
            Source.CATEGORY_POPULAR: self.category_popular,
            Source.GLOBAL_POPULAR: self.global_popular,
        }


def recommend(
    snapshot: Snapshot,
    store: OnlineStore,
    metrics: Metrics,
    *,
    user_id: int,
    k: int,
    session_id: str | None = None,
    category: str | None = None,
    pool: int = 200,
    at: float | None = None,
    breaker: pybreaker.CircuitBreaker | None = None,
) -> Recommendations:
    """Answer one recommendation request from the first source of the chain that can (never a 500 for
    a missing dependency; `ArtifactMissing` only when there are no candidates at all).

    Every Redis call goes through `breaker` when given: while it is open, Redis is not asked.
    """
    if snapshot.candidates is None:
        raise ArtifactMissing(
            "no candidates artifact is loaded (not even popular lists): run `clickrec train candidates`; "
            "the API picks the new version up without a restart"
        )
    at = time.time() if at is None else at
    guard: Guard = breaker.call if breaker is not None else _unguarded
    pool = max(pool, k)
    prefetch = None
    if category is None:  # with a category filter few candidates may remain: the ranker reads its own then
        prefetch = _best_effort("planning the ranker's product reads", ranker_prefetch, snapshot, user_id, pool, at)
    try:
        signals: OnlineSignals | None = guard(read_signals, store, user_id, session_id, at, metrics, prefetch)
    except pybreaker.CircuitBreakerError:
        signals = None  # logged once, when it opened
    except redis.RedisError as error:
        log.warning("online store unavailable, answering without it: %s", error)
        signals = None
    request = _Request(snapshot, store, user_id=user_id, session_id=session_id, category=category,
                       k=k, pool=pool, at=at, signals=signals, guard=guard, prefetch=prefetch)  # fmt: skip
    answer = rec.answer(request.steps(), k)
    metrics.recommendations.labels(source=answer.source.value).inc()
    for skipped in answer.skipped:
        metrics.fallbacks.labels(source=skipped.source.value, reason=skipped.reason.value).inc()
    ranked = answer.ranked
    infos = request.describe(ranked.product_ids)
    items = [
        RecommendedItem(
            product_id=int(pid), score=float(score), reason=reason,
            category_code=(info or {}).get("category_code"), brand=(info or {}).get("brand"), price=(info or {}).get("price"),
        )  # fmt: skip
        for pid, score, reason, info in zip(ranked.product_ids.tolist(), ranked.scores.tolist(), ranked.reasons, infos)
    ]
    return Recommendations(
        user_id=user_id,
        session_id=session_id,
        category=category,
        source=answer.source,
        items=items,
        fallbacks=[Fallback(source=s.source, reason=s.reason.value) for s in answer.skipped],
        candidates_version=snapshot.candidates.version,
        model_version=getattr(snapshot.ranker, "version", None) if answer.source is Source.RANKER else None,
    )


@dataclass(frozen=True)
class Recommender:
    """`recommend` bound to the app's registry, store, metrics and breaker: what /recommendations needs,
    as one FastAPI dependency (each dependency costs every request about 12 µs; five were 50 µs)."""

    registry: Registry
    store: OnlineStore
    metrics: Metrics
    breaker: pybreaker.CircuitBreaker | None = None
    pool: int = 200

    def __call__(self, *, user_id: int, k: int, session_id: str | None = None, category: str | None = None) -> Recommendations:
        return recommend(self.registry.snapshot, self.store, self.metrics, user_id=user_id, k=k, session_id=session_id,
                         category=category, pool=self.pool, breaker=self.breaker)  # fmt: skip
