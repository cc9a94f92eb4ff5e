"""`clickrec train all`: every batch job in dependency order, so a fresh stack answers from the reranker.

1. candidates (ALS, item-item, popular lists, catalogue);
2. the ranker (and the user profiles it materializes into Redis);
3. the session purchase-probability model;
4. the analytics KPIs.

Each step publishes its own artifact version; a failing step is reported and
the later ones still run (the API falls back to what exists). One Spark
session serves the steps that need one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from feature_store.artifacts import ArtifactNotFound, open_artifacts
from feature_store.settings import Settings

log = logging.getLogger(__name__)

STEPS = ("candidates", "ranker", "purchase_model", "analytics")


@dataclass(frozen=True)
class StepResult:
    step: str
    ok: bool
    seconds: float
    detail: str


def missing_steps(settings: Settings) -> list[str]:
    """The steps whose artifact has no version yet."""
    artifacts = open_artifacts(settings)
    missing = []
    for step in STEPS:
        try:
            artifacts.latest(step)
        except ArtifactNotFound:
            missing.append(step)
    return missing


def _candidates(settings: Settings, from_csv: Path | None, spark) -> str:
    from spark_jobs.candidates.job import CandidateParams, train_candidates

    result = train_candidates(settings, CandidateParams(progress=False), from_csv=from_csv)
    return f"version {result.version}: {result.manifest['rows']['users']:,} users x {result.manifest['rows']['items']:,} items"


def _ranker(settings: Settings, from_csv: Path | None, spark) -> str:
    from spark_jobs.ranker.job import RankerJobParams, train_ranker

    result = train_ranker(settings, RankerJobParams(progress=False), from_csv=from_csv, spark=spark)
    test = result.metrics["test"]
    return (f"version {result.version}: held-out NDCG@10 {test['reranked']['ndcg@10']:.3f} vs ALS "
            f"{test['als']['ndcg@10']:.3f}; {result.profiles_written:,} profiles in Redis")  # fmt: skip


def _purchase_model(settings: Settings, from_csv: Path | None, spark) -> str:
    from feature_store.lake import load_events
    from spark_jobs.purchase_model.features import build_training_set
    from spark_jobs.purchase_model.model import publish, train

    table = load_events(settings, from_csv=from_csv)
    model = train(build_training_set(table))
    version = publish(model, open_artifacts(settings), {"source": str(from_csv or settings.lake_url), "events": table.num_rows})
    return f"version {version}: test AUC {model.metrics['test']['auc']:.3f}"


def _analytics(settings: Settings, from_csv: Path | None, spark) -> str:
    from spark_jobs.analytics import job

    result = job.run(spark, settings, from_csv=from_csv)
    return f"version {result.version}: {len(result.tables)} KPI tables"


RUNNERS: dict[str, Callable[[Settings, Path | None, object], str]] = {
    "candidates": _candidates,
    "ranker": _ranker,
    "purchase_model": _purchase_model,
    "analytics": _analytics,
}


def train_all(settings: Settings, *, from_csv: Path | None = None, steps: tuple[str, ...] = STEPS,
              report: Callable[[StepResult], None] = lambda r: None) -> list[StepResult]:  # fmt: skip
    """Run `steps` in order; each result is also handed to `report` as soon as it is known."""
    from spark_jobs.session import spark_session

    spark = spark_session("clickrec-train-all", settings) if {"ranker", "analytics"} & set(steps) else None
    results = []
    try:
        for step in steps:
            started = time.perf_counter()
            try:
                detail, ok = RUNNERS[step](settings, from_csv, spark), True
            except Exception as error:  # one failed step must not stop the others: the API falls back
                log.exception("%s failed", step)
                detail, ok = f"failed: {error}", False
            result = StepResult(step, ok, time.perf_counter() - started, detail)
            report(result)
            results.append(result)
    finally:
        if spark is not None:
            spark.stop()
    return results
