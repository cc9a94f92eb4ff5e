"""Implicit-feedback ALS with Spark MLlib (`implicitPrefs=True`).

Takes the same `Interactions` as the implicit engine (built once on the
driver from the same events), trains with `pyspark.ml.recommendation.ALS` on
whatever master the settings name (``local[*]`` here, a cluster unchanged),
and returns a `FactorModel`, so top-N scoring and the artifacts are identical
for both engines. Confidence is ``1 + alpha * weight`` in both libraries.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.candidates.als_implicit import ALSParams, FactorModel
from spark_jobs.candidates.interactions import Interactions

log = logging.getLogger(__name__)


def _collect_factors(df, n: int, k: int) -> np.ndarray:
    """Spark's (id, features array) rows -> a dense (n, k) float32 matrix; rows never seen stay 0."""
    table = df.select(F.col("id").cast("int").alias("id"), F.col("features")).toArrow()
    out = np.zeros((n, k), dtype=np.float32)
    if table.num_rows:
        ids = table["id"].to_numpy()
        values = pa.concat_arrays([c.flatten() for c in table["features"].chunks]).to_numpy(zero_copy_only=False)
        out[ids] = values.reshape(-1, k)
    return out


def train_spark(spark: SparkSession, interactions: Interactions, params: ALSParams = ALSParams()) -> FactorModel:
    """Fit MLlib ALS on the interactions; factors come back to the driver as a `FactorModel`."""
    from pyspark.ml.recommendation import ALS

    triples = interactions.triples()
    ratings = spark.createDataFrame(triples.to_pandas())
    parallelism = max(int(spark.sparkContext.defaultParallelism), 1)
    als = ALS(
        rank=params.factors,
        maxIter=params.iterations,
        regParam=params.regularization,
        alpha=params.alpha,
        implicitPrefs=True,
        userCol="user_index",
        itemCol="item_index",
        ratingCol="confidence",
        seed=params.seed,
        numUserBlocks=parallelism,
        numItemBlocks=parallelism,
        coldStartStrategy="drop",
        intermediateStorageLevel="MEMORY_ONLY",
        finalStorageLevel="MEMORY_ONLY",
    )
    started = time.perf_counter()
    model = als.fit(ratings.repartition(parallelism))
    n_users, n_items = interactions.shape
    users = _collect_factors(model.userFactors, n_users, params.factors)
    items = _collect_factors(model.itemFactors, n_items, params.factors)
    elapsed = time.perf_counter() - started
    log.info("Spark ALS: %d x %d, %d nnz, rank %d, %d iterations in %.1f s on %s",
             n_users, n_items, interactions.nnz, params.factors, params.iterations, elapsed,
             spark.sparkContext.master)  # fmt: skip
    return FactorModel(users, items, elapsed)
