"""The ranker's input: one row of features per (user, candidate product), the same offline and online.

`candidate_features` is the only place the model's input is computed. The API
calls it with what it read from Redis at request time (`serving.read_inputs`);
the training-set builder calls it with the values the same window functions
produced from the events before each cutoff (`pit`). Both hand it a
`RankInputs`: the user's groups as `OnlineStore.read` returns them (a dict, or
None when the entity has no value) and the candidates' `product_features`.

`product_features` is the part that depends on the product alone (its windows
and catalogue entry): the same for every user at a moment, so the API keeps
recent rows of it (`serving.ProductFeatureCache`) instead of recomputing them
per request. It is computed from `ProductRows`: the product groups as
`read_many` returns them (one dict or None per candidate).

Missing is missing: a feature whose input is absent (no session, a product with
no event this hour, a user without history) is NaN, which XGBoost routes down
its learned "missing" branch, never a silent 0. A count is 0 only when the
window exists and holds no such event.
"""

from __future__ import annotations

import math
import operator
from itertools import repeat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.definitions import PRODUCT_1D, PRODUCT_1H, PRODUCT_2M, FeatureGroup
from spark_jobs.candidates.catalogue import Catalogue
from spark_jobs.candidates.item_item import ItemNeighbours
from spark_jobs.candidates.lookup import index_in_sorted

Row = Mapping[str, Any] | None

#: The model's input, in this order (stored with the model; the API refuses a mismatch).
FEATURES: tuple[str, ...] = (
    # the candidate model
    "als_score",
    "als_rank",
    # the live session (item-to-item "also viewed" similarity to its last products)
    "session_similarity_max",
    "session_similarity_sum",
    "in_session",
    "session_events",
    "session_has_cart",
    # popularity over several windows
    "product_views_2m",
    "product_carts_2m",
    "product_purchases_2m",
    "product_users_2m",
    "product_health_2m",
    "product_views_1h",  # this hour so far + the previous full hour
    "product_purchases_1h",
    "product_views_1d",  # today so far + yesterday
    "product_carts_1d",
    "product_purchases_1d",
    "product_health_1d",
    "catalogue_views",  # over the candidate model's training data
    "catalogue_purchases",
    # price against the user's usual level
    "log_price",
    "price_to_user_mean",
    "price_to_recent_views",
    # the user's tastes and recent moves
    "category_affinity",
    "brand_affinity",
    "same_category_as_last",
    "same_brand_as_last",
    "user_events_2m",
    "user_views_2m",
    "user_carts_2m",
    "user_activity_2m",
    "user_distinct_products_2m",
    "user_history_events",
    # recency
    "seconds_since_product_seen",
    "seconds_since_category_seen",
)

#: The features of the product alone (its windows and its catalogue entry), in `FEATURES` order.
PRODUCT_FEATURES: tuple[str, ...] = (
    "product_views_2m",
    "product_carts_2m",
    "product_purchases_2m",
    "product_users_2m",
    "product_health_2m",
    "product_views_1h",
    "product_purchases_1h",
    "product_views_1d",
    "product_carts_1d",
    "product_purchases_1d",
    "product_health_1d",
    "catalogue_views",
    "catalogue_purchases",
    "log_price",
)

#: The product groups `product_features` reads: (ProductRows field, group, how far back the reader looks).
PRODUCT_READS: tuple[tuple[str, FeatureGroup, float], ...] = (
    ("product_2m", PRODUCT_2M, 0.0),
    ("product_1h", PRODUCT_1H, 0.0),
    ("product_1h_prev", PRODUCT_1H, PRODUCT_1H.length.total_seconds()),
    ("product_1d", PRODUCT_1D, 0.0),
    ("product_1d_prev", PRODUCT_1D, PRODUCT_1D.length.total_seconds()),
)



@dataclass(frozen=True)
class ProductTier:
    """Product features computed from the same reads alone, and so refreshable on their own.

    A cache of `product_features` rows may serve the features of a tier for a while
    after reading them; how long depends on how fast they change: a two-minute window
    moves with every click, an hour or a day barely in a few seconds.
    """

    name: str
    reads: tuple[str, ...]  #: the `PRODUCT_READS` fields (ProductRows) the features come from
    features: tuple[str, ...]  #: the `PRODUCT_FEATURES` computed from them (and the catalogue)


#: The product features by what they are computed from; together, every read and every feature exactly once.
PRODUCT_TIERS: tuple[ProductTier, ...] = (
    ProductTier("two_minute", ("product_2m",), ("product_views_2m", "product_carts_2m", "product_purchases_2m",
                                                "product_users_2m", "product_health_2m")),  # fmt: skip
    ProductTier("hour_and_day", ("product_1h", "product_1h_prev", "product_1d", "product_1d_prev"),
                ("product_views_1h", "product_purchases_1h", "product_views_1d", "product_carts_1d",
                 "product_purchases_1d", "product_health_1d", "catalogue_views", "catalogue_purchases", "log_price")),
)  # fmt: skip
assert sorted(r for t in PRODUCT_TIERS for r in t.reads) == sorted(name for name, _, _ in PRODUCT_READS)
assert sorted(f for t in PRODUCT_TIERS for f in t.features) == sorted(PRODUCT_FEATURES)

NAN = math.nan

#: Where `candidate_features` puts the product features (one run of columns) and those it computes per request.
_PRODUCT_COLUMNS = slice(FEATURES.index(PRODUCT_FEATURES[0]), FEATURES.index(PRODUCT_FEATURES[-1]) + 1)
assert FEATURES[_PRODUCT_COLUMNS] == PRODUCT_FEATURES
_REQUEST_FEATURES = tuple(name for name in FEATURES if name not in PRODUCT_FEATURES)
_REQUEST_COLUMNS = tuple(FEATURES.index(name) for name in _REQUEST_FEATURES)


@dataclass(frozen=True, kw_only=True)
class ProductRows:
    """The `PRODUCT_READS` rows of some products, as `OnlineStore.read_many` returns them (dict or None each)
    or as Redis holds them (`read_groups(raw=True)`)."""

    product_2m: Sequence[Row]
    product_1h: Sequence[Row]
    product_1h_prev: Sequence[Row]
    product_1d: Sequence[Row]
    product_1d_prev: Sequence[Row]

    def __post_init__(self) -> None:
        if len({len(getattr(self, name)) for name, _, _ in PRODUCT_READS}) > 1:
            raise ValueError("every product group needs one entry per candidate")

    def __len__(self) -> int:
        return len(self.product_2m)

    @classmethod
    def missing(cls, n: int) -> ProductRows:
        """n products without any window (no event in any group)."""
        return cls(**{name: [None] * n for name, _, _ in PRODUCT_READS})


@dataclass(frozen=True, kw_only=True)
class RankInputs:
    """Everything the features of one user's candidates are computed from, as of `at`."""

    at: float  #: epoch seconds
    candidates: np.ndarray  #: int64 product ids
    als_scores: np.ndarray  #: float32, NaN where unknown
    user_2m: Row
    session: Row
    profile: Row
    products: np.ndarray  #: the candidates' `product_features` (candidates x PRODUCT_FEATURES)
    catalogue: Catalogue
    neighbours: ItemNeighbours
    #: the candidates' rows in `catalogue` (`catalogue.index_of`), when the caller has looked them up already
    catalogue_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.candidates)
        if len(self.als_scores) != n or self.products.shape != (n, len(PRODUCT_FEATURES)):
            raise ValueError("every per-candidate input needs one entry per candidate")
        if self.catalogue_rows is not None and len(self.catalogue_rows) != n:
            raise ValueError("every per-candidate input needs one entry per candidate")


def _value(row: Row, name: str) -> float:
    if row is None:
        return NAN
    value = row.get(name)
    return NAN if value is None else float(value)


def _columns(rows: Sequence[Row], *names: str) -> dict[str, np.ndarray]:
    """name -> one float per row (NaN where the row or the value is missing); one pass over the rows.

    Rows may be decoded (str names, typed values) or as Redis holds them (bytes names
    and values: numpy reads a number from the bytes).
    """
    blank = (None,) * len(names) if len(names) > 1 else None
    sample = next((r for r in rows if r), None)
    keys = tuple(n.encode() for n in names) if sample is not None and isinstance(next(iter(sample)), bytes) else names
    get = operator.itemgetter(*keys)
    try:  # rows from the codec hold every feature of their group: one C call per row
        values = [get(r) if r is not None else blank for r in rows]
    except KeyError:
        def get(row: Mapping[Any, Any]) -> Any:
            found = tuple(row.get(key) for key in keys)
            return found if len(keys) > 1 else found[0]

        values = [get(r) if r is not None else blank for r in rows]
    # dtype=float turns None into NaN in C: far cheaper than a Python call per value
    table = np.array(values, dtype=np.float64).reshape(len(rows), len(names))
    return {name: table[:, i] for i, name in enumerate(names)}


def _sum_buckets(current: dict[str, np.ndarray], previous: dict[str, np.ndarray], name: str) -> np.ndarray:
    """current + previous bucket, NaN only when neither bucket exists."""
    a, b = current[name], previous[name]
    # one missing: the other (NaN when both are); np.nan_to_num took 5x as long
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, a + b))


def health(carts_and_purchases: np.ndarray, views: np.ndarray) -> np.ndarray:
    """The product health index (see feature_store.definitions) over arbitrary counts."""
    from feature_store.definitions import HEALTH_GLOBAL_RATE, HEALTH_PRIOR_VIEWS

    return (carts_and_purchases + HEALTH_PRIOR_VIEWS * HEALTH_GLOBAL_RATE) / (views + HEALTH_PRIOR_VIEWS)


def als_ranks(scores: np.ndarray) -> np.ndarray:
    """1 = best ALS score; NaN where the score is unknown."""
    if not np.isnan(scores).any() and (scores[1:] <= scores[:-1]).all():  # the API's candidates come best first
        return np.arange(1.0, len(scores) + 1.0)
    ranks = np.full(len(scores), NAN)
    known = np.flatnonzero(~np.isnan(scores))
    order = known[np.argsort(-scores[known], kind="stable")]
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def session_similarity(neighbours: ItemNeighbours, recent: Sequence[int], candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max and sum of the similarity of each candidate to the session's recent products (0 when none is a neighbour)."""
    n = len(candidates)
    if not recent:
        return np.zeros(n), np.zeros(n)
    rows = neighbours.index_of(np.asarray(list(dict.fromkeys(recent)), np.int64))
    rows = rows[rows >= 0]
    cols = neighbours.index_of(candidates)
    if not len(rows):
        return np.zeros(n), np.zeros(n)
    block = np.zeros((len(rows), n), np.float32)
    known = cols >= 0
    if known.any():
        block[:, known] = neighbours.similarity[rows][:, cols[known]].toarray()
    return block.max(axis=0).astype(np.float64), block.sum(axis=0).astype(np.float64)


def _lookup(mapping: Any, keys: Sequence[str | None]) -> np.ndarray:
    """mapping[key] per key: NaN when the mapping is missing, 0 when the key is absent from it (or None)."""
    if mapping is None:
        return np.full(len(keys), NAN)
    # map() calls dict.get in C; the profile's keys are text, so a None key is never found
    return np.fromiter(map(mapping.get, keys, repeat(0.0)), np.float64, len(keys))


def _lookup_ids(mapping: Any, ids: np.ndarray, absent: float) -> np.ndarray:
    """mapping[id] per id of a profile map keyed by ids as text (JSON): `absent` where an id is not in it,
    NaN when the map is missing.

    The maps hold at most 50 ids: their keys are turned into numbers, rather than the
    200 candidates into text (that took 30-40 µs a map, a tenth of the features' time).
    """
    if mapping is None:
        return np.full(len(ids), NAN)
    if not mapping:
        return np.full(len(ids), absent)
    keys = np.fromiter(map(int, mapping), np.int64, len(mapping))
    values = np.fromiter(mapping.values(), np.float64, len(mapping))
    order = np.argsort(keys)
    found = index_in_sorted(keys[order], ids)
    return np.where(found >= 0, values[order][found], absent)


def _same(values: np.ndarray, target: Any, row: Row) -> np.ndarray:
    if row is None or target is None:
        return np.full(len(values), NAN)
    return (values == target).astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: float) -> np.ndarray:
    if math.isnan(denominator) or denominator <= 0:
        return np.full(len(numerator), NAN)
    return numerator / denominator


class _CatalogueView:
    """The catalogue's entries of some products (NaN / -1 / None for products it does not know)."""

    def __init__(self, catalogue: Catalogue, products: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.catalogue = catalogue
        # a lookup among 167k products costs 70-280 µs (October 2019): callers that made it pass its `rows`
        self.rows = catalogue.index_of(products) if rows is None else rows
        self.known = self.rows >= 0
        self.all_known = bool(self.known.all())
        self._safe = self.rows if self.all_known else np.where(self.known, self.rows, 0)

    def take(self, values: np.ndarray, missing: Any) -> np.ndarray:
        if not len(values):  # an empty catalogue: every product is unknown
            return np.full(len(self.rows), missing)
        if self.all_known:  # the usual case: np.where over object arrays costs 15 µs
            return values[self.rows]
        return np.where(self.known, values[self._safe], missing)


_COUNTS = ("views", "carts", "purchases")


def _two_minute_columns(rows: ProductRows, cat: _CatalogueView) -> dict[str, np.ndarray]:
    p2m = _columns(rows.product_2m, *_COUNTS, "distinct_users", "health")
    return {
        "product_views_2m": p2m["views"],
        "product_carts_2m": p2m["carts"],
        "product_purchases_2m": p2m["purchases"],
        "product_users_2m": p2m["distinct_users"],
        "product_health_2m": p2m["health"],
    }


def _hour_and_day_columns(rows: ProductRows, cat: _CatalogueView) -> dict[str, np.ndarray]:
    p1h, p1h_prev = _columns(rows.product_1h, *_COUNTS), _columns(rows.product_1h_prev, *_COUNTS)
    p1d, p1d_prev = _columns(rows.product_1d, *_COUNTS), _columns(rows.product_1d_prev, *_COUNTS)
    views_1d = _sum_buckets(p1d, p1d_prev, "views")
    carts_1d = _sum_buckets(p1d, p1d_prev, "carts")
    purchases_1d = _sum_buckets(p1d, p1d_prev, "purchases")
    catalogue = cat.catalogue
    return {
        "product_views_1h": _sum_buckets(p1h, p1h_prev, "views"),
        "product_purchases_1h": _sum_buckets(p1h, p1h_prev, "purchases"),
        "product_views_1d": views_1d,
        "product_carts_1d": carts_1d,
        "product_purchases_1d": purchases_1d,
        "product_health_1d": health(carts_1d + purchases_1d, views_1d),
        # taken, then widened: widening the whole catalogue's column first took 85 µs at October scale
        "catalogue_views": cat.take(catalogue.views, NAN),
        "catalogue_purchases": cat.take(catalogue.purchases, NAN),
        "log_price": np.log1p(cat.take(catalogue.prices, NAN)),
    }


#: How each `PRODUCT_TIERS` tier's features are computed: from its own reads and the catalogue alone.
_TIER_COLUMNS: dict[str, Callable[[ProductRows, _CatalogueView], dict[str, np.ndarray]]] = {
    "two_minute": _two_minute_columns,
    "hour_and_day": _hour_and_day_columns,
}
assert set(_TIER_COLUMNS) == {tier.name for tier in PRODUCT_TIERS}
#: Where each tier's features sit in `PRODUCT_FEATURES`.
_TIER_POSITIONS = {tier.name: [PRODUCT_FEATURES.index(f) for f in tier.features] for tier in PRODUCT_TIERS}


def tier_features(tier: ProductTier, products: np.ndarray, catalogue: Catalogue, rows: ProductRows,
                  catalogue_rows: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """A (products x len(tier.features)) float32 matrix in `tier.features` order, from the tier's reads in `rows`
    alone (the others are not looked at: the API's cache refreshes one tier without the other) and the
    catalogue (at `catalogue_rows` when the caller has them)."""
    n = len(products)
    if len(rows) != n or (catalogue_rows is not None and len(catalogue_rows) != n):
        raise ValueError("every per-candidate input needs one entry per candidate")
    columns = _TIER_COLUMNS[tier.name](rows, _CatalogueView(catalogue, np.asarray(products, np.int64), catalogue_rows))
    assert tuple(columns) == tier.features, f"the {tier.name} features and PRODUCT_TIERS disagree"
    matrix = np.empty((n, len(tier.features)), np.float32)
    for i, column in enumerate(columns.values()):
        matrix[:, i] = column
    return matrix


def product_features(products: np.ndarray, catalogue: Catalogue, rows: ProductRows,
                     catalogue_rows: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """A (products x len(PRODUCT_FEATURES)) float32 matrix in `PRODUCT_FEATURES` order: the product's windows
    (`rows`, aligned with `products`) and its catalogue entry (at `catalogue_rows` when the caller has them):
    every tier's `tier_features`."""
    products = np.asarray(products, np.int64)
    if catalogue_rows is None and len(rows) == len(products):
        catalogue_rows = catalogue.index_of(products)  # once for both tiers
    matrix = np.empty((len(products), len(PRODUCT_FEATURES)), np.float32)
    for tier in PRODUCT_TIERS:
        matrix[:, _TIER_POSITIONS[tier.name]] = tier_features(tier, products, catalogue, rows, catalogue_rows)
    return matrix


def candidate_features(inputs: RankInputs) -> np.ndarray:
    """A (candidates x len(FEATURES)) float32 matrix in `FEATURES` order."""
    c = inputs.candidates
    n = len(c)
    cat = _CatalogueView(inputs.catalogue, c, inputs.catalogue_rows)
    price = cat.take(inputs.catalogue.prices, NAN)
    category_ids = cat.take(inputs.catalogue.category_ids, -1)  # -1: unknown, an id no profile map holds
    category_codes, brands = cat.take(inputs.catalogue.category_codes, None), cat.take(inputs.catalogue.brands, None)

    session, user, profile = inputs.session, inputs.user_2m, inputs.profile
    recent = list(session.get("recent_products") or []) if session else []
    if session is None:
        sim_max = sim_sum = in_session = np.full(n, NAN)
    else:
        sim_max, sim_sum = session_similarity(inputs.neighbours, recent, c)
        in_session = np.isin(c, np.asarray(recent, np.int64)).astype(np.float64)

    columns: dict[str, np.ndarray | float] = {
        "als_score": inputs.als_scores.astype(np.float64),
        "als_rank": als_ranks(inputs.als_scores.astype(np.float64)),
        "session_similarity_max": sim_max,
        "session_similarity_sum": sim_sum,
        "in_session": in_session,
        "session_events": _value(session, "events"),
        "session_has_cart": _value(session, "has_cart"),
        "price_to_user_mean": _ratio(price, _value(profile, "mean_price")),
        "price_to_recent_views": _ratio(price, _value(user, "mean_view_price")),
        "category_affinity": _lookup_ids(profile.get("category_shares") if profile else None, category_ids, 0.0),
        "brand_affinity": _lookup(profile.get("brand_shares") if profile else None, brands),
        "same_category_as_last": _same(category_codes, user.get("last_category") if user else None, user),
        "same_brand_as_last": _same(brands, user.get("last_brand") if user else None, user),
        "user_events_2m": _value(user, "events"),
        "user_views_2m": _value(user, "views"),
        "user_carts_2m": _value(user, "carts"),
        "user_activity_2m": _value(user, "activity"),
        "user_distinct_products_2m": _value(user, "distinct_products"),
        "user_history_events": _value(profile, "events"),
        # never seen: NaN
        "seconds_since_product_seen": inputs.at - _lookup_ids(profile.get("product_last_seen") if profile else None, c, NAN),
        "seconds_since_category_seen": inputs.at - _lookup_ids(
            profile.get("category_last_seen") if profile else None, category_ids, NAN
        ),
    }
    assert tuple(columns) == _REQUEST_FEATURES, "candidate_features and FEATURES disagree"
    matrix = np.empty((n, len(FEATURES)), np.float32)
    matrix[:, _PRODUCT_COLUMNS] = inputs.products
    for position, column in zip(_REQUEST_COLUMNS, columns.values()):
        matrix[:, position] = column  # a user's value (a float) fills its whole column
    return matrix
