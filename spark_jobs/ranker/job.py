"""`clickrec train ranker`: point-in-time queries -> LambdaMART -> evaluation -> a `ranker` artifact version.

After training, the user profiles at the end of the data are materialized into
the online store (the `user_profile` group), so the API's requests see the
history the training set's queries saw at each period's start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from feature_store.artifacts import open_artifacts
from feature_store.definitions import USER_PROFILE
from feature_store.lake import load_events
from feature_store.settings import Settings
from spark_jobs.ranker import model as ranker_model
from spark_jobs.ranker.dataset import DatasetParams, build_queries
from spark_jobs.ranker.profile import profile_records, user_profiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerJobParams:
    dataset: DatasetParams = field(default_factory=DatasetParams)
    xgb: ranker_model.XGBParams = field(default_factory=ranker_model.XGBParams)
    materialize_profiles: bool = True
    progress: bool = True


@dataclass(frozen=True, eq=False)
class RankerResult:
    version: str
    metrics: dict[str, Any]
    profiles_written: int


def _jsonable(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def materialize_profiles(settings: Settings, events) -> int:
    """Write every user's profile as of the end of `events` into Redis; returns the users written."""
    from feature_store.online import OnlineStore

    end = pc.max(events["event_time"]).as_py() + timedelta(microseconds=1)
    profiles = user_profiles(events, end)
    return OnlineStore.from_url(settings.redis_url).write_entities(USER_PROFILE, profile_records(profiles))


def train_ranker(settings: Settings, params: RankerJobParams = RankerJobParams(), *, from_csv: Path | None = None,
                 spark=None) -> RankerResult:  # fmt: skip
    """Build the queries, train, evaluate on the held-out period, publish, materialize the profiles."""
    started = time.perf_counter()
    events = load_events(settings, from_csv=from_csv)
    if events.num_rows == 0:
        raise ValueError(f"no events in {from_csv or settings.lake_url}")
    own_spark = spark is None
    if own_spark:
        from spark_jobs.session import spark_session

        spark = spark_session("clickrec-ranker", settings)
    try:
        train, test, line = build_queries(spark, events, params.dataset, settings, progress=params.progress)
    finally:
        if own_spark:
            spark.stop()
    model = ranker_model.train(train, params.xgb)
    metrics = ranker_model.evaluate(model, test)
    model.metrics = {
        "test": metrics,
        "train_queries": len(train),
        "test_queries": len(test),
        "candidate_rows": sum(len(q.candidates) for q in train),
        "feature_importance_gain": ranker_model.feature_importance(model),
    }
    extra = {
        "source": str(from_csv) if from_csv else settings.lake_url,
        "timeline": {"test_start": line.test_start.isoformat(), "end": line.end.isoformat(),
                     "refresh_times": [t.isoformat() for t in line.refresh_times],
                     "refresh_seconds": line.refresh.total_seconds()},  # fmt: skip
        "dataset": _jsonable(asdict(params.dataset)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    version = ranker_model.publish(model, open_artifacts(settings), extra)
    written = materialize_profiles(settings, events) if params.materialize_profiles else 0
    log.info("ranker version %s: NDCG@10 %.4f (ALS %.4f, popular %.4f); %d profiles in Redis",
             version, metrics["reranked"]["ndcg@10"], metrics["als"]["ndcg@10"], metrics["popular"]["ndcg@10"],
             written)  # fmt: skip
    return RankerResult(version=version, metrics=model.metrics, profiles_written=written)


def format_metrics(metrics: dict[str, Any]) -> str:
    """The held-out table: one row per order."""
    test = metrics["test"]
    lines = ["| order | NDCG@10 | Recall@20 | HR@10 | MAP@10 | queries |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("reranked", "als", "popular"):
        row = test[name]
        lines.append(f"| {name} | {row['ndcg@10']:.4f} | {row['recall@20']:.4f} | {row['hr@10']:.4f} | "
                     f"{row['map@10']:.4f} | {row['queries']:,} |")  # fmt: skip
    lines.append(f"\nreranked NDCG@10 / ALS order: {test['reranked']['ndcg_vs_als']:.2f}x")
    return "\n".join(lines)
