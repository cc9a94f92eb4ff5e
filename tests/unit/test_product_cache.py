"""The ranker's product cache without Redis: when each product's tiers come due again, with and without
the change feed of the two-minute windows (its replies made up here; tests/integration follow a real one)."""

from __future__ import annotations

import numpy as np

from feature_store.online import CHANGES_KEPT, AheadRows, Changes, ChangesSince, FeedPosition, ReadAhead, ahead_points
from spark_jobs.candidates.catalogue import Catalogue, product_catalogue
from spark_jobs.ranker.features import PRODUCT_FEATURES, PRODUCT_TIERS
from spark_jobs.ranker.serving import FEED_EVERY, ProductFeatureCache
from tests.candidate_data import events

PRODUCTS = np.arange(1, 401, dtype=np.int64)
CATALOGUE = Catalogue(product_catalogue(events([{"user": 1, "product": int(p)} for p in PRODUCTS])))


AT = 1_000_000.0  # the start of a two-minute window's slide step (20 s): AT + 20 is the next window


def _reply(read: ReadAhead) -> AheadRows:
    """As Redis answers a `ReadAhead` (no product has a window): the next window of every product past its point."""
    phase = (read.at % 20) / 20
    return AheadRows([None] * len(read.entity_ids),
                     {i: None for i, point in enumerate(ahead_points(read.entity_ids)) if phase >= point})  # fmt: skip


def _read_all(cache: ProductFeatureCache, at: float, epoch: str = "", seq: int = 0, changed: tuple[int, ...] = (),
              products: np.ndarray = PRODUCTS) -> None:  # fmt: skip
    """A request at `at` reads every stale row (no product has a window: every reply is empty) and the change
    feed, which says it is at (`epoch`, `seq`) and that `changed` products changed since the cache's position
    (no feed at all: epoch '')."""
    refresh = cache.plan(products, at, CATALOGUE)
    replies = [Changes(r.since, FeedPosition(epoch, seq), tuple(str(p) for p in changed)) if isinstance(r, ChangesSince)
               else _reply(r) if isinstance(r, ReadAhead) else [None] * len(r[1]) for r in refresh.reads]  # fmt: skip
    refresh.fill(replies)
    assert refresh.filled


def _stale(cache: ProductFeatureCache, at: float) -> dict[str, int]:
    """Per tier, how many of the products a request at `at` would read again."""
    refresh = cache.plan(PRODUCTS, at, CATALOGUE)
    return {PRODUCT_TIERS[t].name: len(positions) for t, positions in refresh.stale}


def test_each_tier_comes_due_after_its_own_period() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    _read_all(cache, AT)
    assert _stale(cache, AT + 0.99) == {}
    assert _stale(cache, AT + 1.0) == {"two_minute": len(PRODUCTS)}  # the two-minute window after 1 s ...
    assert _stale(cache, AT + 29.9) == {"two_minute": len(PRODUCTS)}  # ... the hour and day counters after 30 s
    assert _stale(cache, AT + 30.0) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}
    _read_all(cache, AT + 30.0)  # a refresh starts each product's period again
    assert _stale(cache, AT + 30.5) == {}


def test_a_row_read_for_this_very_time_always_serves_and_a_later_one_never_serves_earlier() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    _read_all(cache, AT)
    assert _stale(cache, AT) == {}
    assert _stale(cache, AT - 0.1) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}
    off = ProductFeatureCache(seconds=0.0, long_seconds=0.0)  # caching turned off: only the same instant serves
    _read_all(off, AT)
    assert _stale(off, AT) == {} and _stale(off, AT + 0.001) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}


def _stale_two_minute(cache: ProductFeatureCache, at: float) -> list[int]:
    refresh = cache.plan(PRODUCTS, at, CATALOGUE)
    return [int(PRODUCTS[p]) for t, positions in refresh.stale if PRODUCT_TIERS[t].name == "two_minute" for p in positions]


def test_following_the_feed_a_two_minute_row_serves_until_its_product_changes_or_its_window_ends() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    _read_all(cache, AT, "e1", 10)
    read_again: dict[int, float] = {}
    for step in range(1, 40):  # a request every half second follows the feed: rows serve past `seconds` ...
        at = AT + step / 2
        read_again.update((p, at) for p in _stale_two_minute(cache, at))
        _read_all(cache, at, "e1", 10)
    # ... and each product is read once more in the step, just after its point (where Redis builds its next window)
    points = AT + 20 * ahead_points(PRODUCTS)
    assert sorted(read_again) == PRODUCTS.tolist()
    assert all(0 <= read_again[p] - point < 0.5 for p, point in zip(PRODUCTS.tolist(), points))
    assert not cache.plan(PRODUCTS, AT + 19.5 + FEED_EVERY / 2, CATALOGUE).reads  # (the feed was read just now)
    _read_all(cache, AT + 19.5 + FEED_EVERY, "e1", 12, changed=(5, 7, 100_000))  # 100_000: not in the catalogue
    assert _stale_two_minute(cache, AT + 19.6) == [5, 7]  # the changed ones are read again
    _read_all(cache, AT + 19.6, "e1", 12)
    assert _stale(cache, AT + 19.9) == {}
    # a new window: the next windows, read after each product's point, take over (see the next test)
    assert _stale(cache, AT + 20.0) == {}
    assert _stale(cache, AT + 30.0) == {"two_minute": len(PRODUCTS), "hour_and_day": len(PRODUCTS)}  # (no feed)


def test_a_next_window_read_after_the_point_serves_the_next_step_until_a_change_or_its_point_there() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    points = ahead_points(PRODUCTS)
    late = PRODUCTS[points <= 0.6]  # their point passed at AT + 12
    _read_all(cache, AT + 12, "e1", 10)  # Redis returns the next windows of `late` only
    _read_all(cache, AT + 19.9, "e1", 10, products=PRODUCTS[:0])  # (the feed followed: nothing changed)
    assert _stale_two_minute(cache, AT + 20.0) == PRODUCTS[points > 0.6].tolist()  # no next window: read again
    _read_all(cache, AT + 20.0, "e1", 11, changed=(int(late[0]),))  # a change drops the next window too
    assert _stale_two_minute(cache, AT + 20.1) == [int(late[0])]
    _read_all(cache, AT + 20.1, "e1", 11)
    # the next windows serve until each product's point in the new step, as a row read before it
    kept = late[1:].tolist()
    reads: dict[int, list[float]] = {p: [] for p in kept}
    for step in range(1, 40):
        at = AT + 20 + step / 2
        for p in set(_stale_two_minute(cache, at)) & set(kept):
            reads[p].append(at)
        _read_all(cache, at, "e1", 11)
    new_points = AT + 20 + 20 * ahead_points(kept)
    assert all(len(reads[p]) == 1 and 0 <= reads[p][0] - point < 0.5 for p, point in zip(kept, new_points))


def test_a_feed_not_followed_for_seconds_or_lost_falls_back_to_the_period() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    _read_all(cache, AT, "e1", 10)
    assert _stale(cache, AT + 0.99) == {}
    assert _stale(cache, AT + 1.0) == {"two_minute": len(PRODUCTS)}  # nothing followed the feed for 1 s
    _read_all(cache, AT + 1.0, "e1", 10)
    _read_all(cache, AT + 1.5, "e2", 3)  # Redis lost the feed (a new epoch): the rows may have missed changes
    assert _stale(cache, AT + 1.6) == {"two_minute": len(PRODUCTS)}
    _read_all(cache, AT + 1.6, "e2", 3)
    assert _stale(cache, AT + 1.7) == {}
    _read_all(cache, AT + 1.7, "e2", 3 + CHANGES_KEPT + 1)  # so far behind that entries were trimmed
    assert _stale(cache, AT + 1.8) == {"two_minute": len(PRODUCTS)}


def test_rows_read_before_changes_another_request_followed_are_not_kept() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    _read_all(cache, AT, "e1", 10)
    slow = cache.plan(PRODUCTS[:3], AT + 0.5, CATALOGUE)  # reads along with the feed at 11 ...
    _read_all(cache, AT + 0.5, "e1", 12, changed=(1, 2, 3))  # ... while a faster request follows it to 12
    assert _stale(cache, AT + 0.6) == {"two_minute": 3}
    slow.fill([Changes(FeedPosition("e1", 10), FeedPosition("e1", 11), ("1", "2", "3"))] + [[None] * 3] * (len(slow.reads) - 1))
    assert _stale(cache, AT + 0.6) == {"two_minute": 3}  # its rows may predate change 12: not kept
    assert cache.plan(PRODUCTS, AT + 0.6, CATALOGUE).reads[0] == ChangesSince(cache._feed[1], FeedPosition("e1", 12))


def test_the_next_window_read_ahead_is_the_row_served_after_the_boundary() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    views = PRODUCT_FEATURES.index("product_views_2m")
    refresh = cache.plan(PRODUCTS, AT + 19, CATALOGUE)  # past every product's point: Redis sends every next window
    replies = []
    for read in refresh.reads:
        if isinstance(read, ChangesSince):
            replies.append(Changes(read.since, FeedPosition("e1", 10)))
        elif isinstance(read, ReadAhead):  # this window: 1 view; the next one: 2
            replies.append(AheadRows([{b"views": b"1"}] * len(read.entity_ids),
                                     {i: {b"views": b"2"} for i in range(len(read.entity_ids))}))  # fmt: skip
        else:
            replies.append([None] * len(read[1]))
    assert (refresh.fill(replies)[:, views] == 1).all()
    _read_all(cache, AT + 19.9, "e1", 10, products=PRODUCTS[:0])  # the feed followed: nothing changed
    after = cache.plan(PRODUCTS, AT + 20.1, CATALOGUE)
    assert not after.stale and (after.block[:, views] == 2).all()


def _stale_positions(cache: ProductFeatureCache, at: float, tier: str, products: np.ndarray = PRODUCTS) -> np.ndarray:
    refresh = cache.plan(products, at, CATALOGUE)
    return next((positions for t, positions in refresh.stale if PRODUCT_TIERS[t].name == tier), np.empty(0, np.int64))


def test_a_request_reads_at_most_long_rows_of_the_due_counters_the_oldest_first() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=25)
    _read_all(cache, AT, products=PRODUCTS[:200])
    _read_all(cache, AT + 5, products=PRODUCTS[200:])
    due = _stale_positions(cache, AT + 36, "hour_and_day")
    assert len(due) == 25 and set(due.tolist()) <= set(range(200))  # the 200 read first are the oldest
    assert len(_stale_positions(cache, AT + 36, "two_minute")) == len(PRODUCTS)  # the two-minute rows are not limited


def test_deferred_counters_are_all_read_again_within_four_periods() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=25)
    _read_all(cache, AT)
    at, requests = AT + 30, 0
    while len(_stale_positions(cache, at, "hour_and_day")):
        _read_all(cache, at)  # each request reads what its plan says: 25 rows of the counters
        at, requests = at + 0.5, requests + 1
    assert requests == len(PRODUCTS) // 25
    assert _stale_positions(cache, AT + 30 + 0.5 * requests, "hour_and_day").size == 0


def test_counters_past_four_periods_and_never_read_ones_are_always_read() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=25)
    _read_all(cache, AT, products=PRODUCTS[:200])
    # 200 new products and 200 due ones: every new one is read, none of the due ones (no room left)
    due = _stale_positions(cache, AT + 30, "hour_and_day")
    assert sorted(due.tolist()) == list(range(200, 400))
    assert len(_stale_positions(cache, AT + 30 + 4 * 30, "hour_and_day")) == len(PRODUCTS)  # too old to defer
    assert len(_stale_positions(cache, AT + 4 * 30 - 0.1, "hour_and_day", PRODUCTS[:200])) == 25


def test_no_limit_reads_every_due_counter() -> None:
    cache = ProductFeatureCache(seconds=1.0, long_seconds=30.0, long_rows=0)
    _read_all(cache, AT)
    assert len(_stale_positions(cache, AT + 30, "hour_and_day")) == len(PRODUCTS)
