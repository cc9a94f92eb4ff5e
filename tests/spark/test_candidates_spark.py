"""Spark MLlib ALS: planted structure recovered; the candidates job writes a complete version with engine=spark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession

from feature_store.artifacts import open_artifacts
from feature_store.settings import Settings
from producer.synth import SynthConfig, write_synthetic_csv
from spark_jobs.candidates.als_implicit import ALSParams, FactorModel
from spark_jobs.candidates.als_spark import train_spark
from spark_jobs.candidates.interactions import InteractionParams, build_interactions
from spark_jobs.candidates.job import FILES, CandidateParams, train_candidates
from tests.candidate_data import planted_clusters, recall_of

SMALL_ALS = ALSParams(factors=16, iterations=5, regularization=0.01, alpha=10.0, num_threads=1)


def test_spark_als_recovers_planted_clusters_better_than_popularity(spark: SparkSession) -> None:
    train, test = planted_clusters(groups=6, users_per_group=30)
    inter = build_interactions(train, InteractionParams(half_life_days=None, bot_rule=None))
    model = train_spark(spark, inter, SMALL_ALS)
    assert model.user_factors.shape == (inter.shape[0], 16)
    assert np.abs(model.item_factors).sum() > 0
    counts = np.asarray((inter.matrix > 0).sum(axis=0)).ravel()
    popular = FactorModel(np.ones((inter.shape[0], 1), np.float32), counts.reshape(-1, 1).astype(np.float32))
    als_recall, pop_recall = recall_of(model, inter, test), recall_of(popular, inter, test)
    assert als_recall > pop_recall + 0.3, (als_recall, pop_recall)


def test_candidates_job_with_spark_engine(spark: SparkSession, tmp_path: Path) -> None:
    csv = tmp_path / "clicks.csv"
    write_synthetic_csv(csv, SynthConfig(users=200, days=2, seed=3), progress=False)
    settings = Settings(_env_file=None, artifacts_url=f"file://{tmp_path / 'artifacts'}", lake_url=f"file://{tmp_path / 'lake'}")
    params = CandidateParams(engine="spark", top_n=10, als=ALSParams(factors=4, iterations=2), progress=False)
    result = train_candidates(settings, params, from_csv=csv, spark=spark)
    artifacts = open_artifacts(settings)
    assert artifacts.latest("candidates") == result.version
    stored = {k.split("/", 2)[2] for k in artifacts.store.list(f"candidates/{result.version}/")}
    assert stored == set(FILES) | {"_COMPLETE"}
    manifest = artifacts.read_json("candidates", "manifest.json")
    assert manifest["engine"] == "spark"
    lists = artifacts.read_table("candidates", "user_candidates.parquet")
    assert lists.num_rows == manifest["rows"]["users"] * 10
    assert artifacts.read_table("candidates", "item_factors.parquet")["factors"].type.list_size == 4
