"""The recommendation fallback chain and the reasons given for each item: pure, no I/O.

`FALLBACK_CHAIN` declares, once and in order, the sources that may answer a
recommendation request. `answer` walks it: every source is a callable that
returns a `Ranked` list or raises `Skip` with a short, stable reason code (it
ends up in the response and in a metrics label). The first source that
answers wins; every skipped one is reported. The callables themselves are
built at the edge (`services.api.recommender`), which reads Redis and the
artifacts; everything they compute with lives here and is tested without
services: ALS top-N by dot product, the session item-item vote, the category
prefix match, exclusion of bought products and the reason texts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from spark_jobs.candidates.lookup import index_in_sorted


class Source(StrEnum):
    """Who answered a recommendation request."""

    RANKER = "ranker"  #: XGBoost rerank of the user's ALS candidates
    ALS = "als"  #: the ALS candidates in ALS order (no ranker artifact)
    SESSION_ITEM_ITEM = "session_item_item"  #: also-viewed neighbours of the session's recent products
    CATEGORY_POPULAR = "category_popular"  #: best sellers of the requested / the user's last category
    GLOBAL_POPULAR = "global_popular"  #: best sellers overall


#: The fallback chain, in order: the first source that can answer does.
FALLBACK_CHAIN: tuple[Source, ...] = (
    Source.RANKER,
    Source.ALS,
    Source.SESSION_ITEM_ITEM,
    Source.CATEGORY_POPULAR,
    Source.GLOBAL_POPULAR,
)

#: Sources built from the user's identity or behaviour: flagged bots never get them.
PERSONALISED: frozenset[Source] = frozenset({Source.RANKER, Source.ALS, Source.SESSION_ITEM_ITEM})


class SkipReason(StrEnum):
    """Why a source did not answer (stable codes: response field and metrics label)."""

    NO_ARTIFACT = "no_artifact"  #: the artifact it needs is not loaded
    ONLINE_STORE_DOWN = "online_store_down"  #: Redis did not answer
    BOT = "bot"  #: the user is flagged as a bot: no personalised answer
    UNKNOWN_USER = "unknown_user"  #: the user has no ALS factors
    NO_SESSION = "no_session"  #: no session id, or the session has no recent products
    NO_CATEGORY = "no_category"  #: no requested category and no recent one for the user
    EMPTY = "empty"  #: it answered with nothing (after exclusions and the category filter)
    FAILED = "failed"  #: it raised an unexpected error (logged at the edge)


class Skip(Exception):
    """A source cannot answer this request."""

    def __init__(self, reason: SkipReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Ranked:
    """A ranked list: product ids (best first), their scores and one short reason each."""

    product_ids: np.ndarray
    scores: np.ndarray
    reasons: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.product_ids) == len(self.scores) == len(self.reasons):
            raise ValueError("product_ids, scores and reasons must have the same length")

    def __len__(self) -> int:
        return len(self.product_ids)

    def head(self, k: int) -> Ranked:
        return Ranked(self.product_ids[:k], self.scores[:k], self.reasons[:k])


@dataclass(frozen=True)
class Skipped:
    source: Source
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class Answer:
    """The first source that answered, its list, and every source skipped before it."""

    source: Source
    ranked: Ranked
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)


class NoSource(Exception):
    """No source in the chain could answer (not even the global popular list)."""

    def __init__(self, skipped: Sequence[Skipped]) -> None:
        super().__init__("; ".join(f"{s.source.value}: {s.reason.value}" for s in skipped))
        self.skipped = tuple(skipped)


Step = Callable[[], Ranked]


def answer(steps: Mapping[Source, Step], k: int, chain: Sequence[Source] = FALLBACK_CHAIN) -> Answer:
    """Walk `chain`; the first source whose step returns a non-empty list answers (cut to `k`).

    A source without a step, or whose step raises `Skip`, is skipped with its
    reason. An empty list skips too, except from the last source: an empty
    best-seller list (e.g. a category nobody bought from) is an honest answer.
    Raises `NoSource` when every source was skipped.
    """
    skipped: list[Skipped] = []
    for position, source in enumerate(chain):
        step = steps.get(source)
        if step is None:
            skipped.append(Skipped(source, SkipReason.NO_ARTIFACT))
            continue
        try:
            ranked = step()
        except Skip as skip:
            skipped.append(Skipped(source, skip.reason, skip.detail))
            continue
        if len(ranked) == 0 and position < len(chain) - 1:
            skipped.append(Skipped(source, SkipReason.EMPTY))
            continue
        return Answer(source, ranked.head(k), tuple(skipped))
    raise NoSource(skipped)


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def top_by_factors(user_vector: np.ndarray, item_factors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, scores) of the `n` best items for one user: dot products, best first.

    argpartition keeps it O(items) instead of a full sort of the catalogue.
    """
    scores = item_factors @ user_vector
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    top = np.argpartition(-scores, n - 1)[:n]
    order = np.lexsort((top, -scores[top]))  # ties: lower index first, so answers are stable
    top = top[order]
    return top.astype(np.int64), scores[top]


def session_votes(
    similarity, item_ids: np.ndarray, recent: Sequence[int], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The session path: recent products vote for their neighbours, the latest weighing most.

    `similarity` is an items x items CSR matrix over `item_ids` (sorted), `recent`
    the session's products oldest first. The latest item votes with weight 1, the
    one before with 1/2, then 1/3 ... (the protocol measured in
    `spark_jobs.evaluation.sessions`). Returns (product ids, scores, seed): for
    each recommended product, the recent product that contributed most to it.
    """
    newest_first = list(dict.fromkeys(int(p) for p in reversed(recent)))  # repeats vote once, at their latest
    if not newest_first or len(item_ids) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    seeds = np.asarray(newest_first, np.int64)
    pos = index_in_sorted(item_ids, seeds)
    known = pos >= 0
    weights = 1.0 / (np.arange(len(seeds)) + 1.0)
    rows, seeds, weights = pos[known], seeds[known], weights[known]
    if not len(rows):
        return np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    contributions = similarity[rows].toarray() * weights[:, None]  # seeds x items (a handful of rows)
    totals = contributions.sum(axis=0)
    candidates = np.flatnonzero(totals > 0)
    if not len(candidates):
        return np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    order = np.lexsort((item_ids[candidates], -totals[candidates]))[:n]
    best = candidates[order]
    seed_of = seeds[np.argmax(contributions[:, best], axis=0)]
    return item_ids[best].astype(np.int64), totals[best].astype(np.float32), seed_of


# --------------------------------------------------------------------------- #
# Filters
# --------------------------------------------------------------------------- #


def in_category(code: str | None, prefix: str) -> bool:
    """`code` is the category `prefix` or below it: electronics matches electronics.smartphone."""
    return code is not None and (code == prefix or code.startswith(prefix + "."))


def category_mask(codes: Iterable[str | None], prefix: str | None) -> np.ndarray:
    """A boolean mask over category codes; all True when there is no prefix."""
    codes = list(codes)
    if prefix is None:
        return np.ones(len(codes), bool)
    return np.fromiter((in_category(c, prefix) for c in codes), bool, len(codes))


def keep(product_ids: np.ndarray, mask: np.ndarray | None = None, exclude: Iterable[int] = ()) -> np.ndarray:
    """Positions of `product_ids` to keep: inside `mask` and not in `exclude`, in their order."""
    keep_mask = np.ones(len(product_ids), bool) if mask is None else np.asarray(mask, bool).copy()
    excluded = np.fromiter((int(p) for p in exclude), np.int64)
    if len(excluded):
        keep_mask &= ~np.isin(product_ids, excluded)
    return np.flatnonzero(keep_mask)


# --------------------------------------------------------------------------- #
# Reasons
# --------------------------------------------------------------------------- #


def describe_product(product_id: int, info: Mapping[str, object] | None) -> str:
    """A product in words, from what the catalogue knows: "samsung electronics.smartphone 1005115"."""
    if not info:
        return f"product {product_id}"
    parts = [str(v) for v in (info.get("brand"), info.get("category_code")) if v]
    return " ".join([*parts, str(product_id)]) if parts else f"product {product_id}"


@dataclass(frozen=True)
class Taste:
    """The user's long-term taste from the `user_profile` group (shares of weighted activity)."""

    brands: Mapping[str, float] = field(default_factory=dict)
    categories: Mapping[int, float] = field(default_factory=dict)  #: category_id -> share

    @classmethod
    def from_profile(cls, profile: Mapping[str, object] | None) -> Taste:
        if not profile:
            return cls()
        brands = profile.get("brand_shares") or {}
        categories = profile.get("category_shares") or {}
        return cls(
            brands={str(k): float(v) for k, v in dict(brands).items()},  # type: ignore[arg-type]
            categories={int(k): float(v) for k, v in dict(categories).items()},  # type: ignore[arg-type]
        )


#: A brand or category counts as the user's taste from this share of their activity.
TASTE_SHARE = 0.1


def personal_reason(info: Mapping[str, object] | None, taste: Taste) -> str:
    """Why ALS / the ranker picked an item for this user: their taste when it shows, else similar shoppers."""
    if info:
        brand = info.get("brand")
        if brand and taste.brands.get(str(brand), 0.0) >= TASTE_SHARE:
            return f"matches your taste for {brand}"
        category_id = info.get("category_id")
        if category_id is not None and taste.categories.get(int(category_id), 0.0) >= TASTE_SHARE:  # type: ignore[arg-type]
            code = info.get("category_code")
            return f"you often shop in {code}" if code else "you often shop in this category"
    return "shoppers with a taste like yours chose it"


def session_reason(seed_id: int, seed_info: Mapping[str, object] | None) -> str:
    return f"viewed {describe_product(seed_id, seed_info)} in this session"


def popular_reason(category: str | None, metric: str, window_days: int) -> str:
    """"best seller in electronics.smartphone this week" / "most viewed today" ..."""
    what = "best seller" if metric == "purchase" else "most viewed"
    when = "today" if window_days == 1 else "this week" if window_days == 7 else f"in the last {window_days} days"
    return f"{what} in {category} {when}" if category else f"{what} {when}"
