"""The point-in-time learning-to-rank set: (cutoff, user) queries over ALS candidates, graded by what came next.

Timeline (``refresh`` = how often the batch jobs run, one day by default)::

    |--- history ---|T1 ---- cutoffs ----|T2 ---- cutoffs ----|test_start ---- test cutoffs ----|

At each refresh time ``T`` a candidate side is built from the events before
``T`` only, as the nightly batch would have: ALS factors, "also viewed"
neighbours, the product catalogue, user profiles (`CandidateSide`). Cutoffs
``c`` are drawn inside ``[T, next T)``: the event times of random events, so
they fall where shoppers are. At ``c``:

- the query users are those with an event in the last `active_within` (a
  request is plausible), known to the ALS model and not bots;
- candidates: their ALS top-N from the side of ``T``;
- features: `candidate_features` over the side of ``T`` and the online
  features a reader at ``c`` would have seen (`pit.snapshot`, the stream's own
  window functions on the events before ``c``); a share of training queries
  loses its session (`drop_session_share`) so the model also learns the
  request without a session id;
- labels: the best thing the user did with the product in ``[c, c + horizon)``:
  purchase 3 > cart 2 > any other interaction 1 > nothing 0.

Nothing before ``c`` sees anything at or after ``c``; labels are the only reads
of the future (tests/spark/test_ranker.py moves every later event and checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from tqdm import tqdm

from spark_jobs.candidates.als_implicit import FactorModel, recommend_top_n
from spark_jobs.candidates.catalogue import Catalogue, product_catalogue
from spark_jobs.candidates.interactions import Interactions, build_interactions
from spark_jobs.candidates.item_item import ItemNeighbours, item_neighbours
from spark_jobs.candidates.job import CandidateParams, train_factors
from spark_jobs.candidates.popular import popular_lists
from spark_jobs.evaluation.temporal import default_test_day
from spark_jobs.ranker.features import PRODUCT_READS, ProductRows, RankInputs, candidate_features, product_features
from spark_jobs.ranker.pit import Snapshot, current_sessions, recent_users, snapshots
from spark_jobs.ranker.profile import profile_records, user_profiles

log = logging.getLogger(__name__)

#: Label grade per event type; anything else the user did with the product is 1.
GRADES: dict[str, int] = {"purchase": 3, "cart": 2}


@dataclass(frozen=True)
class DatasetParams:
    candidates: CandidateParams = field(default_factory=lambda: CandidateParams(progress=False))
    refresh: timedelta | None = None  #: batch cadence; None = one day (or a quarter of the span for shorter data)
    train_periods: int = 4  #: refresh periods before the test start that produce training queries
    cutoffs_per_period: int = 24
    horizon: timedelta = timedelta(hours=1)  #: labels: what the user does in [c, c + horizon)
    active_within: timedelta = timedelta(minutes=5)  #: query users: an event in [c - active_within, c)
    max_users_per_cutoff: int = 500
    drop_session_share: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_periods < 1 or self.cutoffs_per_period < 1 or not 0 <= self.drop_session_share <= 1:
            raise ValueError("train_periods >= 1, cutoffs_per_period >= 1, 0 <= drop_session_share <= 1")


@dataclass(frozen=True, eq=False)
class CandidateSide:
    """What the batch jobs had published at `start` (trained on events before it)."""

    start: datetime
    interactions: Interactions
    model: FactorModel
    neighbours: ItemNeighbours
    catalogue: Catalogue
    profiles: dict[int, dict]
    popular: list[int]  #: most viewed products over the last day before `start` (distinct users)


@dataclass(frozen=True, eq=False)
class Query:
    """One (cutoff, user) request: its candidates, their features and grades, and everything relevant."""

    cutoff: datetime
    user_id: int
    candidates: np.ndarray
    als_scores: np.ndarray
    features: np.ndarray
    grades: np.ndarray  #: per candidate
    relevant: set[int]  #: every product with grade >= 1 (candidate or not)
    popular: list[int]


@dataclass(frozen=True)
class Timeline:
    test_start: datetime
    end: datetime
    refresh_times: tuple[datetime, ...]  #: training periods' starts, oldest first
    refresh: timedelta


def timeline(events: pa.Table, params: DatasetParams) -> Timeline:
    """Where the test period starts and where the training periods begin."""
    bounds = pc.min_max(events["event_time"]).as_py()
    start, end = bounds["min"], bounds["max"] + timedelta(microseconds=1)
    span = end - start
    if params.refresh is None and span >= timedelta(days=2):
        day = default_test_day(events)
        test_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        refresh = timedelta(days=1)
    else:
        refresh = params.refresh or span / (params.train_periods + 2)
        test_start = end - refresh
    times = [test_start - k * refresh for k in range(params.train_periods, 0, -1)]
    times = [t for t in times if t - start >= refresh * 0.5]  # a side needs some history
    if not times:
        raise ValueError(f"the data ({span}) is too short for {params.train_periods} training periods of {refresh}")
    return Timeline(test_start=test_start, end=end, refresh_times=tuple(times), refresh=refresh)


def _before(events: pa.Table, at: datetime) -> pa.Table:
    return events.filter(pc.less(events["event_time"], pa.scalar(at, events["event_time"].type)))


def candidate_side(events: pa.Table, start: datetime, params: CandidateParams, settings, spark=None) -> CandidateSide:
    """Train the candidate side on the events before `start`."""
    history = _before(events, start)
    interactions = build_interactions(history, params.interactions)
    model = train_factors(interactions, params, settings, spark)
    humans = history
    if interactions.bots:
        bots = pa.array(sorted(interactions.bots), pa.int64())
        humans = history.filter(pc.invert(pc.is_in(history["user_id"], value_set=bots)))
    popular = popular_lists(humans, params.popular)
    top = popular.filter(pc.and_(pc.is_null(popular["category_id"]), pc.equal(popular["metric"], "view")))
    top = top.filter(pc.equal(top["window_days"], min(params.popular.windows_days)))
    profiles = {int(r["entity_id"]): r for r in profile_records(user_profiles(humans, start))}
    return CandidateSide(
        start=start,
        interactions=interactions,
        model=model,
        neighbours=item_neighbours(humans, "also_viewed", params.item_item),
        catalogue=Catalogue(product_catalogue(humans)),
        profiles=profiles,
        popular=top.sort_by("rank")["product_id"].to_pylist(),
    )


def cutoff_times(events: pa.Table, start: datetime, end: datetime, n: int, rng: np.random.Generator) -> list[datetime]:
    """`n` distinct event times in [start, end), drawn at random: cutoffs where shoppers are."""
    inside = events.filter(pc.and_(
        pc.greater_equal(events["event_time"], pa.scalar(start, events["event_time"].type)),
        pc.less(events["event_time"], pa.scalar(end, events["event_time"].type)),
    ))  # fmt: skip
    times = np.unique(pc.cast(inside["event_time"].cast(pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy())
    if not len(times):
        return []
    picked = np.sort(rng.choice(times, size=min(n, len(times)), replace=False))
    return [datetime.fromtimestamp(t / 1e6, UTC) for t in picked]


def label_grades(events: pa.Table, users: Sequence[int], at: datetime, horizon: timedelta) -> dict[int, dict[int, int]]:
    """user -> {product: grade} for what each user did in [at, at + horizon)."""
    t = events["event_time"].type
    window = events.filter(pc.and_(
        pc.greater_equal(events["event_time"], pa.scalar(at, t)),
        pc.less(events["event_time"], pa.scalar(at + horizon, t)),
    ))  # fmt: skip
    window = window.filter(pc.is_in(window["user_id"], value_set=pa.array(list(users), pa.int64())))
    out: dict[int, dict[int, int]] = {}
    for user, product, kind in zip(*(window[c].to_pylist() for c in ("user_id", "product_id", "event_type"))):
        grades = out.setdefault(user, {})
        grades[product] = max(grades.get(product, 0), GRADES.get(kind, 1))
    return out


def _product_rows(snap: Snapshot, candidates: np.ndarray) -> ProductRows:
    ids = candidates.tolist()
    return ProductRows(**{name: [getattr(snap, name).get(p) for p in ids] for name, _, _ in PRODUCT_READS})


def _query_users(events: pa.Table, side: CandidateSide, cutoff: datetime, params: DatasetParams,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(user ids, their ALS index): active just before the cutoff, known to ALS, not bots; at most max_users."""
    users = recent_users(events, cutoff, params.active_within).to_numpy()
    index = side.interactions.user_index(users)
    keep = (index >= 0) & ~np.isin(users, np.asarray(sorted(side.interactions.bots), np.int64))
    users, index = users[keep], index[keep]
    if len(users) > params.max_users_per_cutoff:
        pick = np.sort(rng.choice(len(users), params.max_users_per_cutoff, replace=False))
        users, index = users[pick], index[pick]
    return users, index


def period_queries(
    spark: SparkSession,
    events: pa.Table,
    side: CandidateSide,
    cutoffs: Sequence[datetime],
    params: DatasetParams,
    rng: np.random.Generator,
    *,
    training: bool,
) -> list[Query]:
    """Every query of the cutoffs of one period (training: only those with a positive candidate; else: a
    non-empty relevant set). The online features of all cutoffs come from one Spark job per group."""
    chosen = [_query_users(events, side, c, params, rng) for c in cutoffs]
    sessions = []
    for cutoff, (users, _) in zip(cutoffs, chosen):
        found = current_sessions(events, users.tolist(), cutoff.timestamp())
        if training:
            found = {u: s for u, s in found.items() if rng.random() >= params.drop_session_share}
        sessions.append(found)
    snaps = snapshots(spark, events, list(cutoffs), [list(s.values()) for s in sessions])
    queries = []
    for cutoff, (users, index), found, snap in zip(cutoffs, chosen, sessions, snaps):
        if not len(users):
            continue
        grades = label_grades(events, users.tolist(), cutoff, params.horizon)
        u, i, s = recommend_top_n(side.model, params.candidates.top_n, users=index,
                                  num_threads=params.candidates.als.num_threads, progress=False)  # fmt: skip
        starts = np.r_[0, np.flatnonzero(np.diff(u)) + 1, len(u)] if len(u) else np.zeros(1, np.int64)
        for a, b in zip(starts[:-1], starts[1:]):
            user = int(side.interactions.user_ids[u[a]])
            relevant = grades.get(user, {})
            candidates = side.interactions.item_ids[i[a:b]].astype(np.int64)
            y = np.asarray([relevant.get(int(p), 0) for p in candidates], np.int32)
            if (training and not y.any()) or (not training and not relevant):
                continue
            session_id = found.get(user)
            inputs = RankInputs(
                at=cutoff.timestamp(),
                candidates=candidates,
                als_scores=s[a:b].astype(np.float32),
                user_2m=snap.user_2m.get(user),
                session=snap.session.get(session_id) if session_id else None,
                profile=side.profiles.get(user),
                catalogue=side.catalogue,
                neighbours=side.neighbours,
                products=product_features(candidates, side.catalogue, _product_rows(snap, candidates)),
            )
            queries.append(Query(cutoff=cutoff, user_id=user, candidates=candidates, als_scores=inputs.als_scores,
                                 features=candidate_features(inputs), grades=y, relevant=set(relevant),
                                 popular=side.popular))  # fmt: skip
    return queries


def build_queries(
    spark: SparkSession, events: pa.Table, params: DatasetParams, settings, *, progress: bool = True
) -> tuple[list[Query], list[Query], Timeline]:
    """(training queries, test queries, the timeline) over `events`."""
    line = timeline(events, params)
    rng = np.random.default_rng(params.seed)
    periods = [(t, t + line.refresh, True) for t in line.refresh_times] + [(line.test_start, line.end, False)]
    train: list[Query] = []
    test: list[Query] = []
    with tqdm(total=len(periods), unit="periods", disable=not progress, desc="point-in-time queries",
              dynamic_ncols=True) as bar:  # fmt: skip
        for start, end, training in periods:
            side = candidate_side(events, start, params.candidates, settings)
            cutoffs = cutoff_times(events, start, end, params.cutoffs_per_period, rng)
            found = period_queries(spark, events, side, cutoffs, params, rng, training=training)
            (train if training else test).extend(found)
            bar.update(1)
            bar.set_postfix(train=len(train), test=len(test))
    log.info("%d training and %d test queries (test from %s)", len(train), len(test), line.test_start.isoformat())
    return train, test, line
