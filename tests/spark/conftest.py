"""One local SparkSession for every Spark test (small shuffles, UTC)."""

from __future__ import annotations

import pytest

from feature_store.settings import Settings
from spark_jobs.session import spark_session


@pytest.fixture(scope="session")
def spark():
    session = spark_session(
        "clickrec-tests", Settings(_env_file=None, spark_master="local[2]", spark_shuffle_partitions=2)
    )
    yield session
    session.stop()
