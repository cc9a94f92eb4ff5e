"""The analytics job end to end on the real October sample, checked against an independent count."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from feature_store.artifacts import open_artifacts
from feature_store.settings import Settings
from spark_jobs.analytics import job

from tests.builders import SAMPLE
needs_sample = pytest.mark.skipif(
    not SAMPLE.exists(), reason=f"the real OpenCDP sample {SAMPLE} is not on this machine (third-party data, not in the repo)"
)


def independent_funnel(path: Path) -> dict:
    """Dedup and funnel with the csv module only (not the code under test)."""
    seen: set[tuple] = set()
    stages: dict[str, dict[str, set]] = {"users": defaultdict(set), "sessions": defaultdict(set)}
    rows = purchases = 0
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows += 1
            key = (row["event_time"], row["event_type"], row["product_id"], row["user_id"], row["user_session"], float(row["price"]))
            if key in seen:
                continue
            seen.add(key)
            purchases += row["event_type"] == "purchase"
            stages["users"][row["event_type"]].add(row["user_id"])
            if row["user_session"]:
                stages["sessions"][row["event_type"]].add(row["user_session"])
    return {
        "rows": rows,
        "unique": len(seen),
        "purchases": purchases,
        **{
            level: (len(set().union(*by_type.values())), len(by_type["view"]), len(by_type["cart"]), len(by_type["purchase"]))
            for level, by_type in stages.items()
        },
    }


@needs_sample
def test_real_sample_funnel_and_artifact(spark: SparkSession, tmp_path: Path) -> None:
    expected = independent_funnel(SAMPLE)
    settings = Settings(_env_file=None, artifacts_url=f"file://{tmp_path / 'artifacts'}", lake_url=f"file://{tmp_path / 'lake'}")

    result = job.run(spark, settings, from_csv=SAMPLE, options=job.AnalyticsOptions(min_support=5))

    assert result.manifest["rows_before_dedup"] == expected["rows"] == 17_434
    assert result.manifest["rows_after_dedup"] == expected["unique"]
    assert result.manifest["duplicates_removed"] > 0
    funnel = {r["level"]: (r["entities"], r["viewed"], r["carted"], r["purchased"]) for r in result.tables["funnel"].to_pylist()}
    assert funnel == {"users": expected["users"], "sessions": expected["sessions"]}

    artifacts = open_artifacts(settings)
    manifest = artifacts.read_json("analytics", "manifest.json")
    assert manifest["version"] == result.version == artifacts.latest("analytics")
    assert manifest["data_range"] == {"first_event": "2019-10-01T00:00:00Z", "last_event": "2019-10-01T02:50:00Z"}
    assert set(manifest["tables"]) == {f"{name}.parquet" for name in job.kpi_functions(job.AnalyticsOptions())}
    stored = artifacts.read_table("analytics", "funnel.parquet")
    assert stored.equals(result.tables["funnel"])
    hours = artifacts.read_table("analytics", "purchases_by_hour.parquet").to_pylist()
    assert {r["time_zone"] for r in hours} == {"UTC"}
    assert sum(r["purchases"] for r in hours) == expected["purchases"]
    summary = "\n".join(job.summary_lines(result))
    assert "funnel" in summary and "electronics.smartphone" in summary
