"""DensePredictor: the same predictions as XGBoost's inplace_predict, from any thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xgboost as xgb

from spark_jobs.boosters import DensePredictor


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
