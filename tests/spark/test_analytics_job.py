"""The analytics job end to end on the real October sample, checked against an independent count,
then served by the API (real Redis and broker) route by route."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession

from feature_store.artifacts import open_artifacts
from feature_store.settings import Settings
from services.api.app import create_app
from services.api.registry import json_safe
from spark_jobs.analytics import job
from tests.api_data import api_settings
from tests.builders import SAMPLE, needs_sample


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


@pytest.fixture(scope="module")
def sample_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, job.AnalyticsResult]:
    """`clickrec analytics --from-csv SAMPLE --min-support 5`, once for this module."""
    tmp_path = tmp_path_factory.mktemp("analytics")
    settings = Settings(_env_file=None, artifacts_url=f"file://{tmp_path / 'artifacts'}", lake_url=f"file://{tmp_path / 'lake'}")
    return settings, job.run(spark, settings, from_csv=SAMPLE, options=job.AnalyticsOptions(min_support=5))


@needs_sample
def test_real_sample_funnel_and_artifact(sample_run: tuple[Settings, job.AnalyticsResult]) -> None:
    expected = independent_funnel(SAMPLE)
    settings, result = sample_run

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


@needs_sample
@pytest.mark.integration
def test_the_api_serves_every_kpi_the_job_wrote(
    sample_run: tuple[Settings, job.AnalyticsResult], stack: Settings, tmp_path: Path
) -> None:
    settings, result = sample_run
    app = create_app(api_settings(stack, tmp_path, artifacts_url=settings.artifacts_url))
    paths = sorted(p for p in app.openapi()["paths"] if p.startswith("/analytics/") and "{" not in p)
    served: dict[str, list[dict]] = {}
    with TestClient(app) as client:
        for path in paths:
            response = client.get(path, params={"limit": 1000})
            assert response.status_code == 200, (path, response.text)
            body = response.json()
            assert body["version"] == result.version and body["data_range"] == result.manifest["data_range"]
            served.update({t["name"]: t["rows"] for t in body["tables"]})
        # every table the job wrote has a route, and the route answers exactly what the job computed
        assert set(served) == set(result.tables)
        for name, table in result.tables.items():
            assert served[name] == json_safe(table.to_pylist()), name
        by_purchases = client.get("/analytics/categories", params={"by": "purchases", "limit": 3}).json()
        rows = by_purchases["tables"][0]["rows"]
        assert [r["rank_by_purchases"] for r in rows] == [1, 2, 3]
        assert rows[0]["purchases"] == max(r["purchases"] for r in served["categories"])
        assert client.get("/analytics/categories", params={"by": "buyers"}).status_code == 422
