"""Sliding windows read from Redis stay exact while their combined copy is reused between merges."""

from __future__ import annotations

import time

import pytest

from feature_store.definitions import PRODUCT_2M, USER_2M
from feature_store.online import PREFIX, OnlineStore, bucket_for_read
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
