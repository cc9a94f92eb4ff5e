"""DensePredictor and CompiledPredictor: the same predictions as XGBoost's inplace_predict, from any thread."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from spark_jobs.boosters import CompiledPredictor, DensePredictor, fast_predictor


def booster(objective: str, **extra) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 9)).astype(np.float32)
    x[rng.random(x.shape) < 0.25] = np.nan  # missing values take the learned default branch
    y = (np.nan_to_num(x[:, 0]) + rng.normal(scale=0.5, size=len(x)) > 0).astype(np.float32)
    dmatrix = xgb.DMatrix(x, label=y, missing=np.nan, **extra)
    trained = xgb.train({"objective": objective, "max_depth": 4, "nthread": 1}, dmatrix, num_boost_round=20)
    return trained, x


@pytest.mark.parametrize(
    "objective, extra",
    [("rank:ndcg", {"qid": np.repeat(np.arange(6), 100)}), ("binary:logistic", {}), ("reg:squarederror", {})],
)
def test_same_values_as_inplace_predict(objective: str, extra: dict) -> None:
    trained, x = booster(objective, **extra)
    predict = DensePredictor(trained)
    for rows in (x[:1], x[:200], x[::3], x.astype(np.float64)):  # one row, a block, a strided view, float64 input
        expected = trained.inplace_predict(np.asarray(rows, np.float32), validate_features=False)
        got = predict(rows)
        assert got.dtype == np.float32 and got.shape == (len(rows),)
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(predict(x[:0]), trained.inplace_predict(x[:0], validate_features=False))


def test_results_do_not_alias_the_next_call() -> None:
    trained, x = booster("binary:logistic")
    predict = DensePredictor(trained)
    first = predict(x[:50])
    kept = first.copy()
    predict(x[50:100])
    np.testing.assert_array_equal(first, kept)


def test_threads_each_get_their_own_answers() -> None:
    trained, x = booster("rank:ndcg", qid=np.repeat(np.arange(6), 100))
    predict = DensePredictor(trained)
    blocks = [x[i : i + 100] for i in range(0, 600, 100)] * 20
    expected = [trained.inplace_predict(b, validate_features=False) for b in blocks]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(predict, blocks))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


# --- CompiledPredictor: the trees compiled to C (needs gcc, as `make install` provides) ----------------------


@pytest.mark.parametrize(
    "objective, extra",
    [("rank:ndcg", {"qid": np.repeat(np.arange(6), 100)}), ("binary:logistic", {}), ("reg:squarederror", {})],
)
def test_compiled_trees_predict_what_xgboost_does(objective: str, extra: dict, tmp_path: Path) -> None:
    trained, x = booster(objective, **extra)
    predict = CompiledPredictor.build(trained, tmp_path)
    for rows in (x[:1], x[:200], x[::3], x.astype(np.float64)):
        expected = trained.inplace_predict(np.asarray(rows, np.float32), validate_features=False)
        got = predict(rows)
        assert got.dtype == np.float32 and got.shape == (len(rows),)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_model_is_compiled_once_and_another_model_apart(tmp_path: Path) -> None:
    ranking, x = booster("rank:ndcg", qid=np.repeat(np.arange(6), 100))
    first = CompiledPredictor.build(ranking, tmp_path)
    built = first.library.stat().st_mtime_ns
    again = CompiledPredictor.build(ranking, tmp_path)  # a second worker, or a restart
    assert again.library == first.library and again.library.stat().st_mtime_ns == built
    other = CompiledPredictor.build(booster("binary:logistic")[0], tmp_path)
    assert other.library != first.library
    assert sorted(p.name for p in tmp_path.glob("*.so")) == sorted([first.library.name, other.library.name])
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no scratch left
    np.testing.assert_allclose(again(x[:50]), ranking.inplace_predict(x[:50], validate_features=False), rtol=1e-5, atol=1e-6)


def test_a_library_that_predicts_otherwise_is_refused(tmp_path: Path) -> None:
    ranking, _ = booster("rank:ndcg", qid=np.repeat(np.arange(6), 100))
    other, _ = booster("reg:squarederror")
    built = CompiledPredictor.build(other, tmp_path)
    with pytest.raises(ValueError, match="predicts differently from XGBoost"):
        built.check(ranking)


def test_without_a_compiler_xgboost_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    trained, x = booster("rank:ndcg", qid=np.repeat(np.arange(6), 100))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))  # gcc cannot be found
    with caplog.at_level(logging.WARNING, logger="spark_jobs.boosters"):
        predict = fast_predictor(trained, tmp_path / "compiled")
    assert isinstance(predict, DensePredictor)
    assert "compiling the trees failed" in caplog.text and "API_COMPILED_DIR" in caplog.text
    assert fast_predictor(trained, None).__class__ is DensePredictor  # no directory: not even tried
    np.testing.assert_array_equal(predict(x[:10]), trained.inplace_predict(x[:10], validate_features=False))


def test_workers_loading_one_model_at_once_build_it_once(tmp_path: Path, caplog) -> None:
    trained, x = booster("rank:ndcg", qid=np.repeat(np.arange(6), 100))
    with caplog.at_level(logging.INFO, logger="spark_jobs.boosters"), ThreadPoolExecutor(3) as pool:
        built = list(pool.map(lambda _: CompiledPredictor.build(trained, tmp_path), range(3)))
    assert len({p.library for p in built}) == 1 and caplog.text.count("compiled the trees") == 1
    for predict in built:
        np.testing.assert_allclose(predict(x[:20]), trained.inplace_predict(x[:20], validate_features=False), rtol=1e-5, atol=1e-6)


def test_compiled_trees_answer_each_thread(tmp_path: Path) -> None:
    trained, x = booster("rank:ndcg", qid=np.repeat(np.arange(6), 100))
    predict = CompiledPredictor.build(trained, tmp_path)
    blocks = [x[i : i + 100] for i in range(0, 600, 100)] * 20
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(predict, blocks))
    for g, b in zip(got, blocks):
        np.testing.assert_allclose(g, trained.inplace_predict(b, validate_features=False), rtol=1e-5, atol=1e-6)
