"""The ranker's pure core: candidate features (missing stays NaN), profiles, ranks."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from producer.schema import EVENT_SCHEMA
from spark_jobs.candidates.catalogue import Catalogue, product_catalogue
from spark_jobs.candidates.item_item import item_neighbours
from spark_jobs.ranker.features import (
    FEATURES,
    PRODUCT_FEATURES,
    PRODUCT_TIERS,
    ProductRows,
    RankInputs,
    als_ranks,
    candidate_features,
    product_features,
    session_similarity,
    tier_features,
)
from spark_jobs.ranker.profile import user_profiles
from tests.candidate_data import events

T0 = datetime(2019, 10, 1, tzinfo=UTC)
AT = T0.timestamp() + 3600


def _history() -> pa.Table:
    # sessions {1,2}, {1,2}, {1,3}: 2 is 1's closest neighbour
    return events([
        {"user": 1, "product": 1, "session": "a", "at": 0}, {"user": 1, "product": 2, "session": "a", "at": 10},
        {"user": 2, "product": 1, "session": "b", "at": 20}, {"user": 2, "product": 2, "session": "b", "at": 30},
        {"user": 3, "product": 1, "session": "c", "at": 40}, {"user": 3, "product": 3, "session": "c", "at": 50},
    ])  # fmt: skip


def _inputs(rows: dict | None = None, **overrides) -> RankInputs:
    """Candidates 2, 3 and 99 (unknown to the catalogue); `rows` overrides some product groups' rows."""
    history = _history()
    candidates = np.array([2, 3, 99], np.int64)
    catalogue = Catalogue(product_catalogue(history))
    product_rows = ProductRows(**{**asdict(ProductRows.missing(3)), **(rows or {})})
    base = dict(
        at=AT, candidates=candidates, als_scores=np.array([0.5, 0.9, np.nan], np.float32),
        user_2m=None, session=None, profile=None, products=product_features(candidates, catalogue, product_rows),
        catalogue=catalogue, neighbours=item_neighbours(history, "also_viewed"),
    )  # fmt: skip
    base.update(overrides)
    return RankInputs(**base)


def _column(matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, FEATURES.index(name)]


def test_shape_and_order() -> None:
    matrix = candidate_features(_inputs())
    assert matrix.shape == (3, len(FEATURES)) and matrix.dtype == np.float32


def test_missing_inputs_are_nan_never_zero() -> None:
    matrix = candidate_features(_inputs())
    for name in ("session_similarity_max", "in_session", "product_views_2m", "product_views_1d", "category_affinity",
                 "price_to_user_mean", "user_events_2m", "seconds_since_product_seen", "same_category_as_last"):
        assert np.isnan(_column(matrix, name)).all(), name
    # a product the catalogue does not know has no price; a candidate without ALS score has no rank
    assert np.isnan(_column(matrix, "log_price")[2]) and np.isnan(_column(matrix, "als_rank")[2])


def test_als_rank_follows_the_score() -> None:
    assert als_ranks(np.array([0.5, 0.9, np.nan, 0.1])).tolist()[:2] == [2.0, 1.0]
    assert np.isnan(als_ranks(np.array([np.nan]))[0])


def test_session_similarity_and_membership() -> None:
    session = {"recent_products": [1], "events": 3, "has_cart": 0}
    matrix = candidate_features(_inputs(session=session))
    expected = session_similarity(_inputs().neighbours, [1], np.array([2, 3, 99]))[0]
    assert _column(matrix, "session_similarity_max") == pytest.approx(expected)
    assert expected[0] > expected[1] > 0 and expected[2] == 0  # 2 co-occurs with 1 more often than 3 does
    assert _column(matrix, "in_session").tolist() == [0, 0, 0]
    assert candidate_features(_inputs(session={"recent_products": [3]}))[:, FEATURES.index("in_session")].tolist() == [0, 1, 0]


def test_bucket_sums_are_nan_only_when_both_buckets_are_missing() -> None:
    matrix = candidate_features(_inputs({
        "product_1d": [{"views": 2, "carts": 1, "purchases": 0}, None, None],
        "product_1d_prev": [{"views": 3, "carts": 0, "purchases": 1}, {"views": 4, "carts": 0, "purchases": 0}, None],
    }))  # fmt: skip
    views = _column(matrix, "product_views_1d")
    assert views[:2].tolist() == [5, 4] and np.isnan(views[2])


def test_profile_features() -> None:
    history = _history()
    profile = user_profiles(history, T0 + timedelta(hours=1)).set_index("entity_id").loc[3].to_dict()
    matrix = candidate_features(_inputs(profile=profile))
    # user 3 saw product 3 at T0 + 50 s and never saw 2
    since = _column(matrix, "seconds_since_product_seen")
    assert since[1] == pytest.approx(3600 - 50) and np.isnan(since[0])
    assert _column(matrix, "category_affinity")[:2].tolist() == [1.0, 1.0]  # every product sits in category 1


def test_per_candidate_inputs_must_align() -> None:
    with pytest.raises(ValueError, match="one entry per candidate"):
        _inputs({"product_2m": [None]})
    with pytest.raises(ValueError, match="one entry per candidate"):
        _inputs(products=np.zeros((2, len(PRODUCT_FEATURES)), np.float32))


def test_catalogue_rows_given_by_the_caller_give_the_same_features() -> None:
    profile = user_profiles(_history(), T0 + timedelta(hours=1)).set_index("entity_id").loc[3].to_dict()
    plain = _inputs(profile=profile, user_2m={"last_category": None, "mean_view_price": 10.0})
    rows = plain.catalogue.index_of(plain.candidates)
    assert rows.tolist()[2] == -1  # product 99: unknown to the catalogue
    given = _inputs(profile=profile, user_2m=plain.user_2m, catalogue_rows=rows)
    assert np.array_equal(candidate_features(given), candidate_features(plain), equal_nan=True)
    # the rows given are the ones used (no lookup of its own): swapped, the unknown product gets a price
    swapped = _column(candidate_features(_inputs(user_2m=plain.user_2m, catalogue_rows=rows[[2, 1, 0]])), "price_to_recent_views")
    assert np.isnan(swapped[0]) and swapped[2] == pytest.approx(0.1)
    product_rows = ProductRows.missing(3)
    assert np.array_equal(product_features(plain.candidates, plain.catalogue, product_rows, rows),
                          product_features(plain.candidates, plain.catalogue, product_rows), equal_nan=True)  # fmt: skip
    with pytest.raises(ValueError, match="one entry per candidate"):
        _inputs(catalogue_rows=rows[:2])


def test_product_features_are_the_candidate_features_of_the_product_alone() -> None:
    rows = {"product_2m": [{"views": 4, "carts": 1, "purchases": 0, "distinct_users": 3, "health": 0.2}, None, None]}
    matrix = candidate_features(_inputs(rows))
    block = _inputs(rows).products
    assert np.array_equal(matrix[:, [FEATURES.index(f) for f in PRODUCT_FEATURES]], block, equal_nan=True)
    assert _column(matrix, "product_views_2m")[0] == 4 and np.isnan(_column(matrix, "product_views_2m")[1])


def test_each_product_tier_is_computed_from_its_own_reads_alone() -> None:
    """What the API's product cache relies on to refresh one tier without reading the others."""
    catalogue = Catalogue(product_catalogue(_history()))
    candidates = np.array([2, 3, 99], np.int64)
    row = {"views": 7, "carts": 2, "purchases": 1, "distinct_users": 5, "health": 0.3}
    full = ProductRows(**{name: [row, None, dict(row, views=1)] for name in asdict(ProductRows.missing(3))})
    everything = product_features(candidates, catalogue, full)
    for tier in PRODUCT_TIERS:
        only = ProductRows(**{**asdict(ProductRows.missing(3)), **{name: getattr(full, name) for name in tier.reads}})
        columns = [PRODUCT_FEATURES.index(f) for f in tier.features]
        assert np.array_equal(product_features(candidates, catalogue, only)[:, columns], everything[:, columns],
                              equal_nan=True), tier.name  # fmt: skip
        # what the cache computes when only this tier is stale: its features alone, the same values
        assert np.array_equal(tier_features(tier, candidates, catalogue, only), everything[:, columns], equal_nan=True)
        assert not np.isnan(everything[0, columns]).all()  # the rows do reach these features


def test_profile_counts_history_before_as_of_only() -> None:
    rows = [dict(event_time=T0 + timedelta(minutes=i), event_type=t, product_id=p, category_id=10 + p,
                 category_code=None, brand=b, price=price, user_id=7, user_session=s, event_id=f"e{i}", source="replay")
            for i, (t, p, b, price, s) in enumerate([
                ("view", 1, "acme", 10.0, "s1"), ("cart", 1, "acme", 10.0, "s1"), ("purchase", 1, "acme", 10.0, "s1"),
                ("view", 2, "zeta", 30.0, "s2"), ("purchase", 2, "zeta", 30.0, "s3"),
            ])]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    profile = user_profiles(table, T0 + timedelta(minutes=4)).set_index("entity_id").loc[7]  # the last purchase is excluded
    assert (profile["events"], profile["views"], profile["carts"], profile["purchases"]) == (4, 2, 1, 1)
    assert profile["sessions"] == 2 and profile["purchase_sessions"] == 1
    assert profile["mean_price"] == pytest.approx(15.0)
    assert profile["bought_products"] == [1]
    # weighted activity: product 1 = view 1 + cart 4 + purchase 8 = 13, product 2 = view 1
    assert profile["brand_shares"] == {"acme": pytest.approx(13 / 14, abs=1e-6), "zeta": pytest.approx(1 / 14, abs=1e-6)}
    assert profile["product_last_seen"] == {"2": (T0 + timedelta(minutes=3)).timestamp(), "1": (T0 + timedelta(minutes=2)).timestamp()}
    assert math.isclose(profile["as_of"], (T0 + timedelta(minutes=4)).timestamp())
