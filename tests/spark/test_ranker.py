"""The ranker's training set is point-in-time; the job publishes a model the API can load and use on Redis."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis

from feature_store.artifacts import open_artifacts
from feature_store.definitions import USER_PROFILE
from feature_store.lake import load_events
from feature_store.online import OnlineStore
from feature_store.settings import Settings
from producer.synth import SynthConfig, write_synthetic_csv
from spark_jobs.candidates.job import CandidateParams
from spark_jobs.ranker.dataset import DatasetParams, candidate_side, cutoff_times, label_grades, period_queries, timeline
from spark_jobs.ranker.features import FEATURES
from spark_jobs.ranker.job import RankerJobParams, train_ranker
from spark_jobs.ranker.model import XGBParams
from spark_jobs.ranker.pit import snapshots
from spark_jobs.ranker.serving import Ranker

PARAMS = DatasetParams(candidates=CandidateParams(top_n=50, progress=False), train_periods=1, cutoffs_per_period=4,
                       max_users_per_cutoff=100, seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ranker") / "clicks.csv"
    write_synthetic_csv(path, SynthConfig(users=1000, days=3, seed=11, bot_share=0.005), progress=False)
    return path


@pytest.fixture(scope="module")
def events(synthetic_csv: Path) -> pa.Table:
    return load_events(Settings(_env_file=None), from_csv=synthetic_csv)


def _rewrite_future(events: pa.Table, cutoff) -> pa.Table:
    """Every event at or after `cutoff` moved to another product, and a burst of extra purchases just after it."""
    t = events["event_time"].type
    later = pc.greater_equal(events["event_time"], pa.scalar(cutoff, t))
    product = pc.if_else(later, pc.add(events["product_id"], 1), events["product_id"])
    changed = events.set_column(events.schema.get_field_index("product_id"), "product_id", product)
    burst = changed.filter(later).slice(0, 500)
    burst = burst.set_column(burst.schema.get_field_index("event_type"), "event_type",
                             pa.array(["purchase"] * burst.num_rows, pa.string()))  # fmt: skip
    ids = pc.binary_join_element_wise(burst["event_id"], pa.scalar("-burst"), "")
    burst = burst.set_column(burst.schema.get_field_index("event_id"), "event_id", ids)
    return pa.concat_tables([changed, burst.cast(changed.schema)])


def test_no_feature_reads_an_event_after_its_cutoff(spark, events: pa.Table) -> None:
    line = timeline(events, PARAMS)
    start = line.refresh_times[-1]
    side = candidate_side(events, start, PARAMS.candidates, Settings(_env_file=None))
    cutoffs = cutoff_times(events, start, start + line.refresh, 1, np.random.default_rng(0))
    for cutoff in cutoffs:
        future = _rewrite_future(events, cutoff)
        # every session that has events on both sides of the cutoff
        t = events["event_time"].type
        before = events.filter(pc.less(events["event_time"], pa.scalar(cutoff, t)))["user_session"].unique()
        after = events.filter(pc.greater_equal(events["event_time"], pa.scalar(cutoff, t)))["user_session"].unique()
        sessions = sorted(set(before.to_pylist()) & set(after.to_pylist()) - {None})
        original, moved = (snapshots(spark, e, [cutoff], [sessions])[0] for e in (events, future))
        assert original == moved
        assert original.session and original.product_2m and original.product_1d  # not two empty snapshots
        # the queries built from either timeline have identical features; only the labels may differ
        rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
        a = {q.user_id: q for q in period_queries(spark, events, side, [cutoff], PARAMS, rng_a, training=False)}
        b = {q.user_id: q for q in period_queries(spark, future, side, [cutoff], PARAMS, rng_b, training=False)}
        common = set(a) & set(b)
        assert common, "no query to compare"
        for user in common:
            assert np.array_equal(a[user].candidates, b[user].candidates)
            np.testing.assert_array_equal(a[user].features, b[user].features)
        users = sorted(common)
        assert label_grades(events, users, cutoff, PARAMS.horizon) != label_grades(future, users, cutoff, PARAMS.horizon)


def test_session_features_at_a_cutoff_see_only_the_session_so_far(spark, events: pa.Table) -> None:
    sessions = events.filter(pc.is_valid(events["user_session"]))
    counts = sessions.group_by("user_session").aggregate([("event_time", "min"), ("event_time", "max"), ("user_session", "count")])
    long = counts.filter(pc.greater(counts["user_session_count"], 4)).slice(0, 1).to_pylist()[0]
    middle = long["event_time_min"] + (long["event_time_max"] - long["event_time_min"]) / 2
    snap = snapshots(spark, events, [middle], [[long["user_session"]]])[0]
    row = snap.session[long["user_session"]]
    mine = sessions.filter(pc.equal(sessions["user_session"], long["user_session"]))
    before = mine.filter(pc.less(mine["event_time"], pa.scalar(middle, mine["event_time"].type)))
    assert row["events"] == before.num_rows < long["user_session_count"]
    assert row["last_event_time"] < middle.timestamp()


@pytest.mark.integration
def test_the_job_publishes_a_ranker_that_scores_candidates_from_redis(spark, stack: Settings, synthetic_csv: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    settings = stack.model_copy(update={"artifacts_url": f"file://{tmp_path / 'artifacts'}"})
    redis.Redis.from_url(settings.redis_url).flushdb()
    params = RankerJobParams(dataset=PARAMS, xgb=XGBParams(num_boost_round=40), progress=False)
    result = train_ranker(settings, params, from_csv=synthetic_csv, spark=spark)

    artifacts = open_artifacts(settings)
    manifest = artifacts.read_json("ranker", "manifest.json")
    assert manifest["features"] == list(FEATURES)
    test = result.metrics["test"]
    assert test["reranked"]["queries"] == test["als"]["queries"] > 0
    assert 0 < test["reranked"]["ndcg@10"] <= 1 and test["popular"]["ndcg@10"] <= test["als"]["ndcg@10"]

    store = OnlineStore.from_url(settings.redis_url)
    assert result.profiles_written > 100
    some_user = int(load_events(settings, from_csv=synthetic_csv)["user_id"][0].as_py())
    profile = store.read(USER_PROFILE, some_user)
    assert profile is not None and profile["events"] >= 1

    # score candidates for that user as the API would: one Redis pipeline, one score per candidate
    ranker = Ranker.load(artifacts)
    assert ranker.version == artifacts.latest("ranker")
    from spark_jobs.ranker.dataset import candidate_side as side_at

    events = load_events(settings, from_csv=synthetic_csv)
    end = pc.max(events["event_time"]).as_py() + timedelta(seconds=1)
    side = side_at(events, end, PARAMS.candidates, settings)
    candidates = side.interactions.item_ids[:30].astype(np.int64)
    scores = ranker.rerank(store, user_id=some_user, session_id=None, candidates=candidates,
                           als_scores=np.linspace(1, 0, 30).astype(np.float32), at=end.timestamp(),
                           catalogue=side.catalogue, neighbours=side.neighbours)  # fmt: skip
    assert scores.shape == (30,) and np.isfinite(scores).all() and len(set(scores.tolist())) > 1

    # the API's way: the trees compiled to C score the same
    compiled = Ranker.load(artifacts, compiled_dir=tmp_path / "compiled")
    assert compiled.compiled and not ranker.compiled
    again = compiled.rerank(store, user_id=some_user, session_id=None, candidates=candidates,
                            als_scores=np.linspace(1, 0, 30).astype(np.float32), at=end.timestamp(),
                            catalogue=side.catalogue, neighbours=side.neighbours)  # fmt: skip
    np.testing.assert_allclose(again, scores, rtol=1e-5, atol=1e-5)
