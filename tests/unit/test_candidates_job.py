"""`clickrec train candidates --from-csv` and `clickrec evaluate` end to end on a small synthetic file."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from feature_store.artifacts import Artifacts, LocalBlobStore
from feature_store.settings import get_settings
from producer.synth import SynthConfig, write_synthetic_csv
from services.cli import app
from spark_jobs.candidates.job import FILES


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("synth") / "clicks.csv"
    summary = write_synthetic_csv(path, SynthConfig(users=400, days=3, seed=7, bot_share=0.01), progress=False)
    assert summary.bots >= 1
    return path, summary


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("ARTIFACTS_URL", f"file://{artifacts}")
    monkeypatch.setenv("LAKE_URL", f"file://{tmp_path / 'lake'}")
    get_settings.cache_clear()
    yield Artifacts(LocalBlobStore(artifacts))
    get_settings.cache_clear()


def test_train_candidates_writes_a_complete_version(small_csv, cli_env: Artifacts) -> None:
    path, summary = small_csv
    result = CliRunner().invoke(app, ["train", "candidates", "--from-csv", str(path), "--top-n", "25",
                                      "--factors", "8", "--iterations", "3", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    version = cli_env.latest("candidates")
    assert f"candidates version {version}" in result.output
    stored = {k.split("/", 2)[2] for k in cli_env.store.list(f"candidates/{version}/")}
    assert stored == set(FILES) | {"_COMPLETE"}

    manifest = cli_env.read_json("candidates", "manifest.json")
    assert manifest["engine"] == "implicit"
    assert manifest["parameters"]["top_n"] == 25 and manifest["parameters"]["als"]["factors"] == 8
    assert manifest["data"]["events"] == summary.rows
    assert manifest["rows"]["bots_excluded"] >= summary.bots
    assert set(manifest["timings_seconds"]) >= {"interactions", "als_train", "top_n", "item_item", "popular", "total"}

    lists = cli_env.read_table("candidates", "user_candidates.parquet")
    users = cli_env.read_table("candidates", "user_index.parquet")
    items = cli_env.read_table("candidates", "item_index.parquet")
    assert lists.column_names == ["user_id", "product_id", "score", "rank"]
    assert lists.num_rows == manifest["rows"]["user_candidates"] == users.num_rows * 25
    assert pc.max(lists["rank"]).as_py() == 25 and pc.min(lists["rank"]).as_py() == 1
    assert not set(summary.bot_user_ids) & set(users["user_id"].to_pylist())  # bots excluded
    uf = cli_env.read_table("candidates", "user_factors.parquet")
    itf = cli_env.read_table("candidates", "item_factors.parquet")
    assert uf.num_rows == users.num_rows and itf.num_rows == items.num_rows
    assert uf["factors"].type.list_size == 8
    nb = cli_env.read_table("candidates", "item_neighbours.parquet")
    assert set(pc.unique(nb["kind"]).to_pylist()) == {"also_viewed", "also_bought"}
    popular = cli_env.read_table("candidates", "popular.parquet")
    assert set(pc.unique(popular["window_days"]).to_pylist()) == {1, 7}
    assert set(pc.unique(popular["metric"]).to_pylist()) == {"purchase", "view"}


def test_train_candidates_rejects_unknown_engine(small_csv, cli_env: Artifacts) -> None:
    result = CliRunner().invoke(app, ["train", "candidates", "--engine", "mahout", "--from-csv", str(small_csv[0])])
    assert result.exit_code != 0
    assert cli_env.store.list("candidates/") == []


def test_evaluate_prints_the_table_and_stores_metrics(small_csv, cli_env: Artifacts) -> None:
    path, _ = small_csv
    result = CliRunner().invoke(app, ["evaluate", "--from-csv", str(path), "--engines", "popular,history,item_knn,implicit"])
    assert result.exit_code == 0, result.output
    for model in ("popular", "history", "item_knn", "implicit", "session_knn", "V-SkNN [published]", "XLNet (T4Rec) [published]"):
        assert model in result.output
    assert "different scale" in result.output
    manifest = cli_env.read_json("evaluation", "manifest.json")
    assert set(manifest["temporal"]["models"]) == {"popular", "history", "item_knn", "implicit"}
    assert manifest["temporal"]["test_day"] == "2019-10-03"
    assert 0 <= manifest["temporal"]["models"]["implicit"]["recall@20"] <= 1
