"""Sliding windows read from Redis stay exact while their combined copy is reused between merges."""

from __future__ import annotations

import time

import pytest

from feature_store.definitions import PRODUCT_2M, SESSION_FEATURES, USER_2M
from feature_store.online import PREFIX, AheadRows, OnlineStore, ReadAhead, bucket_for_read
from feature_store.settings import Settings
from tests.api_data import live_click, write_live

pytestmark = pytest.mark.integration


@pytest.fixture
def store(stack: Settings) -> OnlineStore:
    online = OnlineStore.from_url(stack.redis_url.rsplit("/", 1)[0] + "/10")
    online.client.flushdb()
    return online


def _combined_key(product: int, at: float, group=PRODUCT_2M) -> str:
    # feature_store/README.md: a window combined from its panes is kept at <base>:c:<window end>
    return f"{PREFIX}:{group.name}:{product}:c:{bucket_for_read(group, at)}"


def test_a_combined_window_follows_every_merge_into_its_panes(store: OnlineStore) -> None:
    now = time.time()  # every read below is of the one window that holds `now`

    def read(product: int = 11) -> dict | None:
        return store.read(PRODUCT_2M, product, now)

    write_live(store, [live_click(5, 11, at=now - 5, session="s5")])
    assert read()["views"] == 1
    assert store.client.exists(_combined_key(11, now))  # kept for the next reader ...
    assert read()["views"] == 1  # ... who reads the same window

    write_live(store, [live_click(6, 11, at=now - 3, session="s6")])  # the newest pane again
    assert (read()["views"], read()["distinct_users"]) == (2, 2)

    write_live(store, [live_click(5, 11, at=now - 70, session="s5", event_type="cart")])  # an older pane of the window
    assert (read()["views"], read()["carts"]) == (2, 1)

    write_live(store, [live_click(7, 11, at=now - 125, session="s7")])  # a pane before the window
    assert (read()["views"], read()["distinct_users"]) == (2, 2)

    assert read(12) is None  # no event at all: missing, and remembered as such ...
    assert store.client.exists(_combined_key(12, now))
    write_live(store, [live_click(5, 12, at=now - 1, session="s5")])
    assert read(12)["views"] == 1  # ... until the first event arrives

    # a user's window is read by that user's requests alone: combined on every read, never kept
    assert store.read(USER_2M, 5, now)["events"] == 3
    assert not store.client.exists(_combined_key(5, now, USER_2M))


def test_a_batch_of_many_calls_lands_whole(store: OnlineStore) -> None:
    # Merges go to Redis in several script calls (so a reader never waits behind a long one):
    # every row of every call lands, and a bot in a later call is still found.
    now = time.time()
    shoppers = [live_click(1_000 + i, 20_000 + i, at=now - 2, session=f"many-{i}") for i in range(250)]
    bot = [live_click(7_777, 30_000 + j, at=now - 1 - j * 1e-3, session="bot-session") for j in range(150)]
    write_live(store, shoppers + bot)
    windows = store.read_many(PRODUCT_2M, [20_000 + i for i in range(250)], now)
    assert [w and w["views"] for w in windows] == [1] * 250
    sessions = store.read_many(SESSION_FEATURES, [f"many-{i}" for i in range(250)], now)
    assert [s and s["events"] for s in sessions] == [1] * 250
    assert store.is_bot(7_777) and not store.is_bot(1_249)


def test_readers_late_in_a_slide_build_the_next_window_and_merges_keep_it_exact(store: OnlineStore) -> None:
    now = time.time()
    wend = bucket_for_read(PRODUCT_2M, now)  # the window a reader now gets ends here; the next one a slide later
    slide = PRODUCT_2M.slide.total_seconds()
    write_live(store, [live_click(5, 11, at=now - 30, session="s5"), live_click(6, 11, at=now - 1, session="s6")])
    next_key = _combined_key(11, wend + 1)

    store.read(PRODUCT_2M, 11, wend - slide + 0.1)  # early in the slide: the current window only
    assert store.client.exists(_combined_key(11, now)) and not store.client.exists(next_key)
    assert store.read(PRODUCT_2M, 11, wend - 0.1)["views"] == 2  # late in the slide (past every entity's point) ...
    assert store.client.exists(next_key)  # ... the next window is built too
    for _ in range(2):  # a product without events: missing, whether combined now or kept with its next window
        assert store.read(PRODUCT_2M, 99, wend - 0.1) is None and store.read(PRODUCT_2M, 99, wend + 1) is None
    assert store.client.exists(_combined_key(99, wend + 1))

    def fresh_combine() -> dict | None:
        store.client.delete(next_key)
        return store.read(PRODUCT_2M, 11, wend + 1)

    kept = store.read(PRODUCT_2M, 11, wend + 1)
    assert kept == fresh_combine() and kept["views"] == 2  # exactly what combining its panes gives
    store.read(PRODUCT_2M, 11, wend - 0.1)  # built again ...
    write_live(store, [live_click(7, 11, at=now - 0.5, session="s7", event_type="cart")])  # ... and a merge deletes it
    assert not store.client.exists(next_key)
    after = store.read(PRODUCT_2M, 11, wend + 1)
    assert (after["views"], after["carts"], after["distinct_users"]) == (2, 1, 3) and after == fresh_combine()


def test_a_read_ahead_returns_the_next_window_from_the_point_on_exactly_as_it_will_be_read(store: OnlineStore) -> None:
    now = time.time()
    wend = bucket_for_read(PRODUCT_2M, now)
    slide = PRODUCT_2M.slide.total_seconds()
    write_live(store, [live_click(5, 11, at=now - 30, session="s5"), live_click(6, 11, at=now - 1, session="s6")])

    def ahead(at: float, products: tuple[int, ...] = (11, 99)) -> AheadRows:
        (reply,) = store.read_groups([ReadAhead(PRODUCT_2M, list(products), at)])
        return reply

    early = ahead(wend - slide + 0.1)  # before every product's point: the windows alone
    assert early.following == {} and early.rows == store.read_many(PRODUCT_2M, [11, 99], now)
    def combined_next() -> dict | None:  # product 11's next window, combined from its panes
        store.client.delete(_combined_key(11, wend + 1))
        return store.read(PRODUCT_2M, 11, wend + 1)

    late = ahead(wend - 0.1)  # past it: the next windows too (99 has none: missing)
    assert late.rows[0]["views"] == 2 and late.following == {0: combined_next(), 1: None}
    assert ahead(wend - 0.1) == late  # the second time from the kept next windows

    # an event in the pane starting at the window's end deletes the next window but not this one
    write_live(store, [live_click(7, 11, at=wend + 0.5, session="s7", event_type="cart")])
    assert store.client.exists(_combined_key(11, now)) and not store.client.exists(_combined_key(11, wend + 1))
    rebuilt = ahead(wend - 0.1, (11,)).following[0]
    assert rebuilt["carts"] == 1 and rebuilt == combined_next()
    with pytest.raises(ValueError, match="kept combined"):
        store.read_groups([ReadAhead(USER_2M, [5], now)])
