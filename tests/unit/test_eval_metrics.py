"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from spark_jobs.evaluation.metrics import (
    catalogue_coverage,
    evaluate_lists,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    recall_at_k,
)

# recommended [1, 2, 3, 4, 5], relevant {2, 5, 9}: hits at ranks 2 and 5
REC, REL = [1, 2, 3, 4, 5], {2, 5, 9}


def test_recall() -> None:
    assert recall_at_k(REC, REL, 5) == pytest.approx(2 / 3)
    assert recall_at_k(REC, REL, 3) == pytest.approx(1 / 3)
    assert recall_at_k(REC, REL, 1) == 0.0


def test_hit_rate() -> None:
    assert hit_rate_at_k(REC, REL, 1) == 0.0
    assert hit_rate_at_k(REC, REL, 2) == 1.0


def test_ndcg() -> None:
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(REC, REL, 5) == pytest.approx(dcg / idcg)  # (0.6309 + 0.3869) / (1 + 0.6309 + 0.5)
    assert ndcg_at_k(REC, REL, 5) == pytest.approx(0.47762, abs=1e-4)
    assert ndcg_at_k([7, 3], {3}, 20) == pytest.approx(1 / math.log2(3))  # single target at rank 2
    assert ndcg_at_k([2, 5, 9], REL, 3) == pytest.approx(1.0)


def test_map() -> None:
    # precision at the hits: 1/2 and 2/5; divided by min(|rel|, k) = 3
    assert map_at_k(REC, REL, 5) == pytest.approx((1 / 2 + 2 / 5) / 3)
    # with k = 2 only the first hit counts, divided by min(3, 2) = 2
    assert map_at_k(REC, REL, 2) == pytest.approx((1 / 2) / 2)


def test_duplicates_count_once() -> None:
    assert recall_at_k([2, 2, 2, 5], REL, 2) == pytest.approx(2 / 3)


def test_coverage_and_mean() -> None:
    assert catalogue_coverage([[1, 2, 3], [3, 4, 5]], 10, 2) == pytest.approx(4 / 10)
    out = evaluate_lists([[1, 2], [3, 4]], [{2}, {9}], 2, catalogue_size=8)
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["hit_rate@2"] == pytest.approx(0.5)
    assert out["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert out["coverage@2"] == pytest.approx(0.5)
    assert out["users"] == 2


def test_empty_relevant_is_an_error() -> None:
    with pytest.raises(ValueError):
        recall_at_k([1], set(), 5)
    with pytest.raises(ValueError):
        ndcg_at_k([1], set(), 5)
    with pytest.raises(ValueError):
        recall_at_k([1], {1}, 0)
