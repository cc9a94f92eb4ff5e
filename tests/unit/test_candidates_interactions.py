"""Events -> weighted interactions: type weights, recency decay, bots by list and by rate."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from spark_jobs.candidates.bots import BotRule, detect_bots, max_window_counts
from spark_jobs.candidates.interactions import InteractionParams, build_interactions, event_weights
from tests.candidate_data import T0, events


def cell(inter, user: int, product: int) -> float:
    u, i = inter.user_index([user])[0], inter.item_index([product])[0]
    assert u >= 0 and i >= 0, "user or product missing"
    return float(inter.matrix[u, i])


def test_type_weights_sum_per_cell() -> None:
    table = events([
        {"user": 1, "product": 10, "type": "view"},
        {"user": 1, "product": 10, "type": "cart"},
        {"user": 1, "product": 10, "type": "purchase"},
        {"user": 1, "product": 11, "type": "like"},
        {"user": 2, "product": 10, "type": "view"},
    ])  # fmt: skip
    inter = build_interactions(table, InteractionParams(half_life_days=None, bot_rule=None))
    assert cell(inter, 1, 10) == pytest.approx(1 + 4 + 8)
    assert cell(inter, 1, 11) == pytest.approx(2)
    assert cell(inter, 2, 10) == pytest.approx(1)
    assert inter.nnz == 3


def test_zero_weight_types_drop_out() -> None:
    table = events([{"user": 1, "product": 10, "type": "remove_from_cart"}, {"user": 1, "product": 11}])
    inter = build_interactions(table, InteractionParams(half_life_days=None, bot_rule=None))
    assert inter.item_ids.tolist() == [11]


def test_custom_weights() -> None:
    params = InteractionParams.with_weights({"view": 0.5, "cart": 3.0}, half_life_days=None, bot_rule=None)
    table = events([{"user": 1, "product": 10}, {"user": 1, "product": 10, "type": "cart"}])
    assert cell(build_interactions(table, params), 1, 10) == pytest.approx(3.5)


def test_recency_decay_halves_per_half_life() -> None:
    table = events([
        {"user": 1, "product": 10, "at": T0},
        {"user": 1, "product": 11, "at": T0 + timedelta(days=7)},
        {"user": 1, "product": 12, "at": T0 + timedelta(days=14)},
    ])  # fmt: skip
    params = InteractionParams(half_life_days=7.0, bot_rule=None)
    weights = event_weights(table, params)
    assert weights.tolist() == pytest.approx([0.25, 0.5, 1.0])
    ref = T0 + timedelta(days=21)
    inter = build_interactions(table, params, reference_time=ref)
    assert [cell(inter, 1, p) for p in (10, 11, 12)] == pytest.approx([0.125, 0.25, 0.5])


def test_explicit_bots_are_excluded() -> None:
    table = events([{"user": 1, "product": 10}, {"user": 666, "product": 10}, {"user": 666, "product": 11}])
    inter = build_interactions(table, InteractionParams(bot_rule=None), bot_user_ids=[666])
    assert inter.user_ids.tolist() == [1]
    assert inter.item_ids.tolist() == [10]
    assert inter.bots == frozenset({666})


def test_rate_rule_flags_fast_users_only() -> None:
    rule = BotRule(max_events_per_minute=5)  # more than 10 events in one 2-minute window
    fast = [{"user": 9, "product": 100 + n, "at": 240 + n * 2} for n in range(11)]  # 11 events in 22 s
    slow = [{"user": 1, "product": 100 + n, "at": n * 30} for n in range(40)]  # 4 per 2 minutes, for 20 minutes
    edge = [{"user": 2, "product": 100 + n, "at": 600 + n} for n in range(10)]  # exactly 10: still human
    table = events(fast + slow + edge)
    assert detect_bots(table, rule) == frozenset({9})
    inter = build_interactions(table, InteractionParams(bot_rule=rule))
    assert 9 not in inter.user_ids.tolist()
    assert sorted(inter.user_ids.tolist()) == [1, 2]


def test_windows_are_tumbling_and_aligned() -> None:
    # 8 events at 110..117 s and 8 at 120..127 s: 16 within 17 s, but split over two aligned windows
    users = np.full(16, 5)
    seconds = np.r_[np.arange(110, 118), np.arange(120, 128)]
    assert max_window_counts(users, seconds, BotRule()) == {5: 8}
    assert BotRule(max_events_per_minute=4).exceeds(9)
    assert not BotRule(max_events_per_minute=4).exceeds(8)


def test_mappings_round_trip() -> None:
    table = events([{"user": 30, "product": 7}, {"user": 10, "product": 5}, {"user": 20, "product": 7}])
    inter = build_interactions(table, InteractionParams(bot_rule=None))
    users, items = inter.mapping_tables()
    assert users["user_id"].to_pylist() == [10, 20, 30]
    assert items["product_id"].to_pylist() == [5, 7]
    assert inter.user_index([20, 99]).tolist() == [1, -1]
    triples = inter.triples()
    assert triples.num_rows == 3
