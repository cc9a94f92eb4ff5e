"""The ranker's product cache without Redis: when each product's tiers come due again."""

from __future__ import annotations

import numpy as np

from spark_jobs.candidates.catalogue import Catalogue, product_catalogue
from spark_jobs.ranker.features import PRODUCT_TIERS
from spark_jobs.ranker.serving import ProductFeatureCache
from tests.candidate_data import events

PRODUCTS = np.arange(1, 401, dtype=np.int64)
CATALOGUE = Catalogue(product_catalogue(events([{"user": 1, "product": int(p)} for p in PRODUCTS])))
AT = 1_000_000.0


def _read_all(cache: ProductFeatureCache, at: float) -> None:
    """A request at `at` reads every stale row (no product has a window: every reply is empty)."""
    refresh = cache.plan(PRODUCTS, at, CATALOGUE)
    refresh.fill([[None] * len(ids) for _, ids, _ in refresh.reads])
    assert refresh.filled


def _stale(cache: ProductFeatureCache, at: float) -> dict[str, int]:
    """Per tier, how many of the products a request at `at` would read again."""
    refresh = cache.plan(PRODUCTS, at, CATALOGUE)
    return {PRODUCT_TIERS[t].name: len(positions) for t, positions in refresh.stale}


def test_each_tier_comes_due_after_its_own_period() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0)
    _read_all(cache, AT)
    assert _stale(cache, AT + 0.99) == {}
    assert _stale(cache, AT + 1.0) == {"two_minute": len(PRODUCTS)}  # the two-minute window after 1 s ...
    assert _stale(cache, AT + 29.9) == {"two_minute": len(PRODUCTS)}  # ... the hour and day counters after 30 s
    assert _stale(cache, AT + 30.0) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}
    _read_all(cache, AT + 30.0)  # a refresh starts each product's period again
    assert _stale(cache, AT + 30.5) == {}


def test_a_row_read_for_this_very_time_always_serves_and_a_later_one_never_serves_earlier() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0)
    _read_all(cache, AT)
    assert _stale(cache, AT) == {}
    assert _stale(cache, AT - 0.1) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}
    off = ProductFeatureCache(seconds=0.0, long_seconds=0.0)  # caching turned off: only the same instant serves
    _read_all(off, AT)
    assert _stale(off, AT) == {} and _stale(off, AT + 0.001) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}
