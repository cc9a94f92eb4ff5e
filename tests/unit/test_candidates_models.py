"""Item-item, popular lists, implicit ALS on planted structure, and the temporal evaluation."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from spark_jobs.candidates.als_implicit import ALSParams, FactorModel, recommend_top_n, train_implicit
from spark_jobs.candidates.interactions import InteractionParams, build_interactions
from spark_jobs.candidates.item_item import ItemItemParams, ItemNeighbours, item_neighbours
from spark_jobs.candidates.job import CandidateParams
from spark_jobs.candidates.popular import PopularParams, popular_lists
from spark_jobs.evaluation.sessions import SessionParams, evaluate_sessions, session_sequences
from spark_jobs.evaluation.temporal import evaluate_temporal, split_by_day
from tests.candidate_data import T0, events, planted_clusters, recall_of

SMALL_ALS = ALSParams(factors=16, iterations=10, regularization=0.05, alpha=10.0, num_threads=1)


def test_item_item_cosine_within_sessions() -> None:
    # sessions: {1,2}, {1,2}, {1,3}; 4 alone. cos(1,2) = 2 / sqrt(3*2); cos(1,3) = 1 / sqrt(3*1)
    table = events([
        {"user": 1, "product": 1, "session": "a"}, {"user": 1, "product": 2, "session": "a"},
        {"user": 2, "product": 1, "session": "b"}, {"user": 2, "product": 2, "session": "b"},
        {"user": 3, "product": 1, "session": "c"}, {"user": 3, "product": 3, "session": "c"},
        {"user": 3, "product": 3, "session": "c"}, {"user": 4, "product": 4, "session": "d"},
    ])  # fmt: skip
    nb = item_neighbours(table, "also_viewed")
    rows = {(r["product_id"], r["neighbour_id"]): r for r in nb.to_table().to_pylist()}
    assert rows[(1, 2)]["score"] == pytest.approx(2 / np.sqrt(6), rel=1e-5)
    assert rows[(1, 3)]["score"] == pytest.approx(1 / np.sqrt(3), rel=1e-5)
    assert rows[(1, 2)]["rank"] == 1 and rows[(1, 3)]["rank"] == 2
    assert (1, 1) not in rows and not any(4 in key for key in rows)
    assert set(pc.unique(nb.to_table()["kind"]).to_pylist()) == {"also_viewed"}
    back = ItemNeighbours.from_table(pa.concat_tables([nb.to_table(), item_neighbours(table, "also_bought").to_table()]),
                                     "also_viewed")  # fmt: skip
    assert back.to_table().equals(nb.to_table())
    top1 = item_neighbours(table, "also_viewed", ItemItemParams(top_k=1)).to_table()
    assert top1.filter(pc.equal(top1["product_id"], 1))["neighbour_id"].to_pylist() == [2]


def test_also_bought_uses_carts_and_purchases_only() -> None:
    table = events([
        {"user": 1, "product": 1, "session": "a", "type": "purchase"}, {"user": 1, "product": 2, "session": "a", "type": "cart"},
        {"user": 1, "product": 3, "session": "a"},
    ])  # fmt: skip
    pairs = {(r["product_id"], r["neighbour_id"]) for r in item_neighbours(table, "also_bought").to_table().to_pylist()}
    assert pairs == {(1, 2), (2, 1)}


def test_popular_windows_and_categories() -> None:
    old = T0
    new = T0 + timedelta(days=6, hours=12)
    table = events([
        {"user": 1, "product": 1, "at": old, "category": 7}, {"user": 2, "product": 1, "at": old, "category": 7},
        {"user": 3, "product": 1, "at": old, "category": 7},
        {"user": 1, "product": 2, "at": new, "category": 8}, {"user": 2, "product": 2, "at": new, "category": 8},
        {"user": 1, "product": 2, "at": new, "category": 8},  # same user twice counts once
        {"user": 4, "product": 3, "at": new, "category": 7},
        {"user": 5, "product": 3, "at": new, "category": 7, "type": "purchase"},
    ])  # fmt: skip
    lists = popular_lists(table, PopularParams(windows_days=(1, 7), top_k=10)).to_pylist()

    def ranked(days, metric, category):
        return [(r["product_id"], r["users"]) for r in lists
                if r["window_days"] == days and r["metric"] == metric and r["category_id"] == category]  # fmt: skip

    assert ranked(1, "view", None) == [(2, 2), (3, 1)]  # product 1 is older than a day
    assert ranked(7, "view", None) == [(1, 3), (2, 2), (3, 1)]
    assert ranked(7, "view", 7) == [(1, 3), (3, 1)]
    assert ranked(1, "purchase", None) == [(3, 1)]
    assert lists[0]["category_id"] is None  # global lists come first


def test_implicit_als_recovers_planted_clusters_better_than_popularity() -> None:
    train, test = planted_clusters()
    inter = build_interactions(train, InteractionParams(half_life_days=None, bot_rule=None))
    model = train_implicit(inter.matrix, SMALL_ALS, progress=False)
    als_recall = recall_of(model, inter, test)
    # popularity: the 20 most interacted items, minus what each user has seen (same protocol)
    counts = np.asarray((inter.matrix > 0).sum(axis=0)).ravel()
    pop_model = FactorModel(np.ones((inter.shape[0], 1), np.float32), counts.reshape(-1, 1).astype(np.float32))
    pop_recall = recall_of(pop_model, inter, test)
    assert als_recall > 0.5, als_recall  # 18 unseen cluster items, 20 slots
    assert als_recall > pop_recall + 0.3, (als_recall, pop_recall)


def test_recommend_top_n_filters_seen_items() -> None:
    train, _ = planted_clusters(groups=3, users_per_group=10)
    inter = build_interactions(train, InteractionParams(bot_rule=None))
    model = train_implicit(inter.matrix, SMALL_ALS, progress=False)
    u, i, s = recommend_top_n(model, 15, seen=inter.matrix, progress=False, num_threads=1)
    seen = inter.matrix.tocsr()
    assert len(u) == inter.shape[0] * 15
    assert all(seen[a, b] == 0 for a, b in zip(u.tolist(), i.tolist()))
    u2, i2, _ = recommend_top_n(model, 15, progress=False, num_threads=1)
    assert any(seen[a, b] > 0 for a, b in zip(u2.tolist(), i2.tolist()))  # without the filter they come back
    first = s[u == 0]
    assert np.all(np.diff(first) <= 0)  # best first


def test_temporal_split_is_strict_and_models_rank_as_planted() -> None:
    train, test = planted_clusters()
    table = pa.concat_tables([train, test])
    day = date(2019, 10, 3)
    before, on = split_by_day(table, day)
    assert before.num_rows == train.num_rows and on.num_rows == test.num_rows
    params = CandidateParams(als=SMALL_ALS, exclude_seen=True, progress=False,
                             interactions=InteractionParams(bot_rule=None))  # fmt: skip
    result = evaluate_temporal(table, day, models=("popular", "item_knn", "implicit"), params=params)
    scores = {s.model: s.metrics["recall@20"] for s in result.scores}
    assert result.users_evaluated == 400
    assert scores["implicit"] > scores["popular"] + 0.3, scores
    assert scores["item_knn"] > scores["popular"], scores


def test_session_sequences_collapse_repeats_and_cut() -> None:
    table = events([
        {"user": 1, "product": p, "at": n, "session": "a"} for n, p in enumerate([5, 5, 6, 5, 7, 7, 8])
    ])  # fmt: skip
    seqs, _ = session_sequences(table, max_length=3)
    assert seqs == [[5, 7, 8]]
    seqs, _ = session_sequences(table, max_length=20)
    assert seqs == [[5, 6, 5, 7, 8]]


def test_session_knn_predicts_planted_next_items() -> None:
    # train: sessions always walk 1 -> 2 -> 3 or 10 -> 11 -> 12; test sessions (later) do the same
    rows = []
    for s in range(40):
        chain = [1, 2, 3] if s % 2 else [10, 11, 12]
        rows += [{"user": s, "product": p, "at": s * 100 + n, "session": f"s{s}"} for n, p in enumerate(chain)]
    for s in range(40, 50):
        chain = [1, 2, 3] if s % 2 else [10, 11, 12]
        rows += [{"user": s, "product": p, "at": 10_000 + s * 100 + n, "session": f"s{s}"} for n, p in enumerate(chain)]
    rows += [{"user": 99, "product": 50, "at": n * 100} for n in range(40)]  # a very popular distractor
    result = evaluate_sessions(events(rows), "planted", SessionParams(split_fraction=0.75, bot_rule=None))
    assert result.test_sessions >= 5
    assert result.scores["session_knn"]["hr@20"] == pytest.approx(1.0)
    assert result.scores["session_knn"]["ndcg@20"] > result.scores["popular"]["ndcg@20"]
