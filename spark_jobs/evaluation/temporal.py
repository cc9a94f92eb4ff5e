"""Temporal hold-out: train strictly before day D, test on day D, for users with history.

For every user who has interactions before D (bots excluded) and at least one
event on D, the relevant set is every product they touched on D (any event
type with a positive weight: views count). Nothing from D or later is visible
to any model. Items first seen on D stay in the relevant sets: no model can
recommend them, which is the honest cost of cold items.

Models (all trained on the same `Interactions` the candidates job builds):

- ``popular``: most viewed products (distinct users) over the last 7 days before D,
- ``history``: the user's own items by decayed weight (a "buy it again / view it again" reference),
- ``item_knn``: the user's items vote for their also-viewed neighbours (cosine, top-K),
- ``implicit`` / ``spark``: ALS with either engine, scored by dot product.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from spark_jobs.candidates.als_implicit import FactorModel, recommend_top_n, train_implicit
from spark_jobs.candidates.interactions import Interactions, build_interactions, event_weights
from spark_jobs.candidates.item_item import item_neighbours
from spark_jobs.candidates.job import CandidateParams
from spark_jobs.candidates.popular import PopularParams, popular_lists
from spark_jobs.evaluation.metrics import evaluate_lists

log = logging.getLogger(__name__)

MODELS: tuple[str, ...] = ("popular", "history", "item_knn", "implicit", "spark")


@dataclass(frozen=True)
class ModelScore:
    model: str
    metrics: dict[str, float]
    train_seconds: float
    note: str = ""


@dataclass(frozen=True)
class TemporalResult:
    test_day: date
    train_events: int
    test_events: int
    users_evaluated: int
    train_users: int
    train_items: int
    mean_relevant: float
    k: int
    scores: list[ModelScore] = field(default_factory=list)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def default_test_day(events: pa.Table) -> date:
    """The last day with at least half the median day's events (a generator's spill past midnight is skipped)."""
    days = pc.strftime(events["event_time"], format="%Y-%m-%d")
    counts = pc.value_counts(days).to_pylist()
    per_day = sorted((c["values"], c["counts"]) for c in counts)
    if len(per_day) < 2:
        raise ValueError("the temporal split needs at least two days of events")
    median = float(np.median([n for _, n in per_day]))
    full = [d for d, n in per_day if n >= 0.5 * median]
    return date.fromisoformat(full[-1])


def split_by_day(events: pa.Table, day: date) -> tuple[pa.Table, pa.Table]:
    """(events strictly before `day`, events on `day`), both UTC."""
    start = pa.scalar(_day_start(day), events["event_time"].type)
    end = pa.scalar(_day_start(day + timedelta(days=1)), events["event_time"].type)
    train = events.filter(pc.less(events["event_time"], start))
    test = events.filter(pc.and_(pc.greater_equal(events["event_time"], start), pc.less(events["event_time"], end)))
    return train, test


def relevant_sets(test: pa.Table, interactions: Interactions, params: CandidateParams) -> tuple[np.ndarray, list[set[int]]]:
    """Test users with history (their train index) and the products each touched on the test day."""
    weights = event_weights(test, params.interactions)
    test = test.filter(pa.array(weights > 0))
    if interactions.bots:
        test = test.filter(pc.invert(pc.is_in(test["user_id"], value_set=pa.array(sorted(interactions.bots), pa.int64()))))
    pairs = test.group_by(["user_id", "product_id"]).aggregate([]).sort_by("user_id")
    users = pairs["user_id"].to_numpy()
    items = pairs["product_id"].to_numpy()
    index = interactions.user_index(users)
    known = index >= 0
    users, items, index = users[known], items[known], index[known]
    if len(users) == 0:
        return np.empty(0, np.int64), []
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    ends = np.r_[starts[1:], len(users)]
    return index[starts], [set(items[a:b].tolist()) for a, b in zip(starts, ends)]


def lists_from_scores(scores: sp.csr_matrix, item_ids: np.ndarray, k: int, fill: Sequence[int]) -> list[list[int]]:
    """Top-k item ids per row of a sparse score matrix, padded with `fill` (popular) where short."""
    out = []
    for row in range(scores.shape[0]):
        lo, hi = scores.indptr[row], scores.indptr[row + 1]
        data, cols = scores.data[lo:hi], scores.indices[lo:hi]
        if hi - lo > k:
            part = np.argpartition(-data, k - 1)[:k]
            data, cols = data[part], cols[part]
        order = np.lexsort((cols, -data))
        ranked = item_ids[cols[order]].tolist()
        if len(ranked) < k:
            have = set(ranked)
            ranked += [i for i in fill if i not in have][: k - len(ranked)]
        out.append(ranked)
    return out


def _factor_lists(model: FactorModel, interactions: Interactions, users: np.ndarray, k: int, params: CandidateParams) -> list[list[int]]:
    seen = interactions.matrix if params.exclude_seen else None
    u, i, _ = recommend_top_n(model, k, seen=seen, users=users, num_threads=params.als.num_threads, progress=False)
    lists: dict[int, list[int]] = {int(x): [] for x in users}
    for uu, ii in zip(u.tolist(), interactions.item_ids[i].tolist()):
        lists[uu].append(ii)
    return [lists[int(x)] for x in users]


def evaluate_temporal(
    events: pa.Table,
    test_day: date | None = None,
    *,
    models: Sequence[str] = MODELS,
    k: int = 20,
    params: CandidateParams = CandidateParams(),
    bot_user_ids: Sequence[int] = (),
    spark_factory: Callable[[], object] | None = None,
) -> TemporalResult:
    """Train every model on events before the test day and score its top-k against the day's interactions."""
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}: choose from {MODELS}")
    day = test_day or default_test_day(events)
    train, test = split_by_day(events, day)
    if train.num_rows == 0 or test.num_rows == 0:
        raise ValueError(f"test day {day}: {train.num_rows} events before it, {test.num_rows} on it; need both")
    # Bots: the rule runs on all events (rates, not labels), so test-day bots stay out of the relevant sets too.
    from spark_jobs.candidates.bots import detect_bots

    bots = set(bot_user_ids)
    if params.interactions.bot_rule is not None:
        bots |= detect_bots(events, params.interactions.bot_rule)
    interactions = build_interactions(train, params.interactions, bot_user_ids=bots, reference_time=_day_start(day))
    users, relevant = relevant_sets(test, interactions, params)
    if len(users) == 0:
        raise ValueError(f"no user active on {day} has history before it")
    humans = train.filter(pc.invert(pc.is_in(train["user_id"], value_set=pa.array(sorted(interactions.bots), pa.int64()))))
    popular = popular_lists(humans, PopularParams(windows_days=(7,), metrics=("view",), top_k=max(k, 100)))
    fill = popular.filter(pc.is_null(popular["category_id"]))["product_id"].to_pylist()
    result = TemporalResult(
        test_day=day, train_events=train.num_rows, test_events=test.num_rows, users_evaluated=len(users),
        train_users=interactions.shape[0], train_items=interactions.shape[1],
        mean_relevant=float(np.mean([len(r) for r in relevant])), k=k,
    )  # fmt: skip
    log.info("temporal split at %s: %d train events, %d test events, %d users evaluated",
             day, train.num_rows, test.num_rows, len(users))  # fmt: skip
    catalogue = interactions.shape[1]
    for name in models:
        started = time.perf_counter()
        note = ""
        if name == "popular":
            lists = [fill[:k]] * len(users)
            note = "most viewed (distinct users), last 7 days"
        elif name == "history":
            lists = lists_from_scores(interactions.matrix[users], interactions.item_ids, k, fill)
            note = "user's own items by decayed weight, popular fill"
        elif name == "item_knn":
            nb = item_neighbours(humans, "also_viewed", params.item_item)
            cols = nb.index_of(interactions.item_ids)
            ok = cols >= 0
            remap = sp.csr_matrix((np.ones(ok.sum(), np.float32), (np.flatnonzero(ok), cols[ok])),
                                  shape=(catalogue, len(nb.item_ids)))  # fmt: skip
            history = (interactions.matrix[users] @ remap).tocsr()
            lists = lists_from_scores(nb.score_items(history), nb.item_ids, k, fill)
            note = f"also-viewed cosine, top-{params.item_item.top_k} neighbours, popular fill"
        elif name == "implicit":
            model = train_implicit(interactions.matrix, params.als, progress=False)
            lists = _factor_lists(model, interactions, users, k, params)
            note = f"{params.als.factors} factors, {params.als.iterations} it."
        else:  # spark
            from spark_jobs.candidates.als_spark import train_spark

            if spark_factory is None:
                raise ValueError("the spark model needs a Spark session factory")
            model = train_spark(spark_factory(), interactions, params.als)
            lists = _factor_lists(model, interactions, users, k, params)
            note = f"MLlib rank {params.als.factors}, {params.als.iterations} it."
        seconds = time.perf_counter() - started
        metrics = evaluate_lists(lists, relevant, k, catalogue_size=catalogue)
        log.info("%s: %s (%.1f s)", name, {m: round(v, 4) for m, v in metrics.items()}, seconds)
        result.scores.append(ModelScore(name, metrics, round(seconds, 2), note))
    return result
