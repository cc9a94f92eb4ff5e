"""The end-to-end tests share the Spark session fixture of the Spark tests."""

from tests.spark.conftest import spark  # noqa: F401  (a fixture, re-exported)
