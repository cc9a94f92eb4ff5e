"""index_in_sorted: positions in a sorted id array, -1 where absent."""

from __future__ import annotations

import numpy as np

from spark_jobs.candidates.lookup import index_in_sorted


def test_positions_and_misses_on_both_sides_and_between() -> None:
    haystack = np.array([10, 20, 30, 40], np.int64)
    got = index_in_sorted(haystack, np.array([20, 5, 40, 45, 25, 10, 20]))
    assert got.tolist() == [1, -1, 3, -1, -1, 0, 1]
    assert got.dtype == np.int64


def test_empty_inputs() -> None:
    assert index_in_sorted(np.empty(0, np.int64), np.array([1, 2])).tolist() == [-1, -1]
    assert index_in_sorted(np.array([1, 2], np.int64), np.empty(0, np.int64)).tolist() == []


def test_agrees_with_a_dictionary_lookup() -> None:
    rng = np.random.default_rng(0)
    haystack = np.unique(rng.integers(0, 10_000, 3_000))
    needles = rng.integers(-5, 10_005, 5_000)
    where = {int(v): i for i, v in enumerate(haystack)}
    assert index_in_sorted(haystack, needles).tolist() == [where.get(int(n), -1) for n in needles]
