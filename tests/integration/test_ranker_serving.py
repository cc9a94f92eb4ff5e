"""The ranker's request-time read against real Redis: the same values as `read_many`, cached boundedly."""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pytest

from feature_store.definitions import PRODUCT_1D, PRODUCT_2M, SESSION_FEATURES, USER_2M
from feature_store.online import OnlineStore, Shopper, changes_key, decode_features
from feature_store.settings import Settings
from producer.schema import EVENT_SCHEMA
from spark_jobs.candidates.catalogue import Catalogue, product_catalogue
from spark_jobs.candidates.item_item import item_neighbours
from spark_jobs.ranker.features import PRODUCT_FEATURES, PRODUCT_READS, PRODUCT_TIERS, ProductRows, product_features
from spark_jobs.ranker.serving import ProductFeatureCache, read_inputs, read_product_rows
from tests.api_data import live_click, write_live

pytestmark = pytest.mark.integration

PRODUCTS = np.array([11, 12, 13, 99], np.int64)  # 99: no event at all


@pytest.fixture
def store(stack: Settings) -> OnlineStore:
    online = OnlineStore.from_url(stack.redis_url.rsplit("/", 1)[0] + "/9")
    online.client.flushdb()
    return online


EMPTY = EVENT_SCHEMA.empty_table()
#: The candidates' catalogue (the cache keeps rows of catalogue products only); 99 is in it too.
CATALOGUE = Catalogue(product_catalogue(pa.Table.from_pylist(
    [live_click(1, int(p), at=0.0).model_dump() for p in PRODUCTS], schema=EVENT_SCHEMA)))  # fmt: skip


def _inputs(store: OnlineStore, cache: ProductFeatureCache | None, at: float, shopper: Shopper | None = None,
            products: np.ndarray | None = None):  # fmt: skip
    return read_inputs(store, user_id=5, session_id="s5", candidates=PRODUCTS, als_scores=np.ones(4, np.float32), at=at,
                       catalogue=CATALOGUE, neighbours=item_neighbours(EMPTY, "also_viewed"), cache=cache,
                       shopper=shopper, products=products)  # fmt: skip


def _views_2m(inputs) -> list[float]:
    return inputs.products[:, PRODUCT_FEATURES.index("product_views_2m")].tolist()


def _views_1d(inputs) -> list[float]:
    return inputs.products[:, PRODUCT_FEATURES.index("product_views_1d")].tolist()


def _script_calls(store: OnlineStore) -> int:
    return int(store.client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_round_trip_reads_what_read_many_reads(store: OnlineStore) -> None:
    now = time.time()
    write_live(store, [live_click(5, p, at=now - 5 + i, session="s5") for i, p in enumerate([11, 12, 12, 13])])
    inputs = _inputs(store, None, now)
    assert inputs.user_2m == store.read(USER_2M, 5, now) and inputs.user_2m["views"] == 4
    assert inputs.session == store.read(SESSION_FEATURES, "s5") and inputs.session["recent_products"] == [11, 12, 12, 13]
    assert inputs.profile is None  # no profile materialized: missing, not zero
    _, raw = read_product_rows(store, PRODUCTS.tolist(), now)  # rows as Redis holds them
    decoded = ProductRows(**{name: store.read_many(group, PRODUCTS.tolist(), now - back) for name, group, back in PRODUCT_READS})
    assert [decode_features(PRODUCT_2M, r) if r else None for r in raw.product_2m] == decoded.product_2m
    assert [decode_features(PRODUCT_1D, r) if r else None for r in raw.product_1d] == decoded.product_1d
    assert np.array_equal(product_features(PRODUCTS, CATALOGUE, raw), product_features(PRODUCTS, CATALOGUE, decoded),
                          equal_nan=True)  # fmt: skip
    assert np.array_equal(inputs.products, product_features(PRODUCTS, CATALOGUE, decoded), equal_nan=True)
    views = _views_2m(inputs)
    assert views[:3] == [1, 2, 1] and math.isnan(views[3])


def test_cached_product_rows_are_at_most_the_cache_age_old(store: OnlineStore) -> None:
    now = time.time()
    write_live(store, [live_click(5, 11, at=now - 3, session="s5")])
    long_lived, short_lived = ProductFeatureCache(3600, 3600), ProductFeatureCache(0.5, 0.5)
    assert _views_2m(_inputs(store, long_lived, now))[0] == 1
    assert _views_2m(_inputs(store, short_lived, now))[0] == 1

    write_live(store, [live_click(6, 11, at=now - 2, session="s6")])  # another shopper views product 11
    later = _inputs(store, long_lived, now + 1)
    assert _views_2m(later)[0] == 1  # served from the cache ...
    assert later.user_2m["views"] == 1 and later.session["events"] == 1  # ... but never the user's own features
    assert _views_2m(_inputs(store, None, now + 1))[0] == 2  # no cache: the new value
    assert _views_2m(_inputs(store, short_lived, now + 0.4))[0] == 1  # younger than the cache age
    assert _views_2m(_inputs(store, short_lived, now + 0.6))[0] == 2  # older: read again


def _first_request(store: OnlineStore, cache: ProductFeatureCache):
    """User 5 viewed product 11 three seconds ago; a request now fills `cache`: (now, shopper, its inputs)."""
    now = time.time()
    write_live(store, [live_click(5, 11, at=now - 3, session="s5")])
    shopper = store.read_shopper(5, "s5", now)
    return now, shopper, _inputs(store, cache, now, shopper)


def test_fresh_rows_cost_no_redis_read(store: OnlineStore) -> None:
    cache = ProductFeatureCache(1.0, 1.0)
    now, shopper, first = _first_request(store, cache)
    calls = _script_calls(store)
    again = _inputs(store, cache, now + 0.5, shopper)
    assert _script_calls(store) == calls  # every product fresh: no round trip at all
    assert np.array_equal(first.products, again.products, equal_nan=True)
    _inputs(store, cache, now - 0.1, shopper)  # a request for an earlier time never gets a later row
    assert _script_calls(store) > calls
    expired = _inputs(store, cache, now + 1.0, shopper)
    assert np.array_equal(expired.products, _inputs(store, None, now + 1.0).products, equal_nan=True)


def test_hourly_and_daily_counters_are_kept_longer_than_the_two_minute_window(store: OnlineStore) -> None:
    cache = ProductFeatureCache(1.0, 60.0)
    now, shopper, first = _first_request(store, cache)
    assert _views_2m(first)[0] == 1 and _views_1d(first)[0] == 1

    write_live(store, [live_click(6, 11, at=now - 2, session="s6")])  # another view of product 11
    calls = _script_calls(store)
    later = _inputs(store, cache, now + 2, shopper)
    assert _script_calls(store) - calls == 2  # the change feed and the two-minute window of the candidates
    assert _views_2m(later)[0] == 2  # read again after 1 s ...
    assert _views_1d(later)[0] == 1  # ... the day's counter served from the cache for up to 60 s
    assert _views_1d(_inputs(store, None, now + 2))[0] == 2  # what Redis holds
    assert _views_1d(_inputs(store, cache, now + 61, shopper))[0] == 2  # and what the cache serves once expired
    assert np.array_equal(_inputs(store, cache, now + 61.5, shopper).products, _inputs(store, None, now + 61.5).products,
                          equal_nan=True)  # fmt: skip


def _stale_2m(cache: ProductFeatureCache, at: float) -> list[int]:
    """The candidates whose two-minute row a request at `at` would read again."""
    stale = dict(cache.plan(PRODUCTS, at, CATALOGUE).stale)
    two_minute = next(t for t, tier in enumerate(PRODUCT_TIERS) if tier.name == "two_minute")
    return PRODUCTS[stale.get(two_minute, [])].tolist()


def test_the_streams_change_feed_drops_exactly_the_rows_that_changed(store: OnlineStore) -> None:
    # the previous 20-s step, before any product's point in it (`ahead_points`: 99's is at 5.3 s)
    start = math.floor(time.time() / 20) * 20 - 20
    write_live(store, [live_click(5, p, at=start - 2, session="s5") for p in (11, 12)])
    cache = ProductFeatureCache(1.0, 30.0)
    _inputs(store, cache, start)  # reads every row, and the feed
    for step in range(1, 6):  # a request every half second: each round trip follows the feed
        assert _stale_2m(cache, start + step / 2) == []  # served past the cache's 1 s
        _inputs(store, cache, start + step / 2)
    write_live(store, [live_click(6, 12, at=start + 2, session="s6")])  # the stream merges a view of 12
    feed = changes_key(PRODUCT_2M)
    assert store.client.zscore(feed, "12") is not None and store.client.zscore(feed, "13") is None
    assert _stale_2m(cache, start + 3) == []  # planned before the next round trip reads the feed ...
    _inputs(store, cache, start + 3)
    assert _stale_2m(cache, start + 3.5) == [12]  # ... after it, 12 alone is read again
    inputs = _inputs(store, cache, start + 3.5)
    assert _views_2m(inputs)[:2] == [1, 2]
    two_minute = [PRODUCT_FEATURES.index(f) for tier in PRODUCT_TIERS if tier.name == "two_minute" for f in tier.features]
    uncached = _inputs(store, None, start + 3.5).products  # (the hour and day counters are cached for 30 s)
    assert np.array_equal(inputs.products[:, two_minute], uncached[:, two_minute], equal_nan=True)
    assert _stale_2m(cache, start + 4) == []


def test_stale_rows_read_along_with_the_shopper_leave_the_ranker_nothing_to_read(store: OnlineStore) -> None:
    now = time.time()
    write_live(store, [live_click(5, p, at=now - 5 + i, session="s5") for i, p in enumerate([11, 12, 12, 13])])
    cache = ProductFeatureCache(1.0, 30.0)
    refresh = cache.plan(PRODUCTS, now, CATALOGUE)
    assert len(refresh.reads) == 1 + len(PRODUCT_READS) and not refresh.filled  # the feed, and every read
    shopper, replies = store.read_shopper_and(5, "s5", now, refresh.reads)  # one round trip
    assert shopper == store.read_shopper(5, "s5", now)
    block = refresh.fill(replies)
    assert refresh.filled and refresh.block is block
    assert np.array_equal(block, _inputs(store, None, now).products, equal_nan=True)
    calls = _script_calls(store)
    assert _inputs(store, None, now, shopper, products=block).products is block  # the rows handed over, as in the API
    inputs = _inputs(store, cache, now, shopper)  # or the ranker's own read
    assert _script_calls(store) == calls  # found every row fresh
    assert np.array_equal(inputs.products, block, equal_nan=True)
    assert cache.plan(PRODUCTS, now + 0.5, CATALOGUE).filled  # nothing stale: filled from the start
    assert not cache.plan(PRODUCTS[:2], now + 0.5, CATALOGUE).stale  # and so does the next request


def test_one_round_trip_reads_the_shopper_and_survives_redis_forgetting_the_scripts(store: OnlineStore) -> None:
    now = time.time()
    write_live(store, [live_click(5, p, at=now - 5 + i, session="s5") for i, p in enumerate([11, 12])])
    shopper = store.read_shopper(5, "s5", now)
    assert not shopper.bot and shopper.profile is None
    assert shopper.user_2m == store.read(USER_2M, 5, now) and shopper.session == store.read(SESSION_FEATURES, "s5")
    assert [e["product_id"] for e in shopper.session_events] == [11, 12] == [e["product_id"] for e in store.session_events("s5")]
    assert store.read_shopper(5, None, now).session is None
    # Reads call their scripts by SHA; a Redis that restarted (or SCRIPT FLUSH) has none of them.
    store.client.script_flush()
    assert store.read_shopper(5, "s5", now) == shopper
    store.client.script_flush()
    assert store.read_many(PRODUCT_2M, PRODUCTS.tolist(), now)[0]["views"] == 1


def test_products_outside_the_catalogue_are_read_every_time(store: OnlineStore) -> None:
    now = time.time()
    write_live(store, [live_click(5, 11, at=now - 3, session="s5")])
    empty = Catalogue(product_catalogue(EMPTY))  # e.g. a candidates version without a catalogue row for them
    cache = ProductFeatureCache(3600, 3600)
    shopper = store.read_shopper(5, "s5", now)

    def views() -> float:
        inputs = read_inputs(store, user_id=5, session_id="s5", candidates=PRODUCTS, als_scores=np.ones(4, np.float32),
                             at=now, catalogue=empty, neighbours=item_neighbours(EMPTY, "also_viewed"), cache=cache,
                             shopper=shopper)  # fmt: skip
        return _views_2m(inputs)[0]

    assert views() == 1
    write_live(store, [live_click(6, 11, at=now - 2, session="s6")])
    assert views() == 2  # no slot, so never served from the cache
