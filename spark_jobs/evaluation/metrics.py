"""Ranking metrics for offline evaluation (pure Python / numpy, binary relevance).

Each per-list function takes one ranked list of recommended ids and the set of
relevant ids; the `mean_*` helpers average over users (or sessions).
Conventions (the common ones, stated so the numbers can be checked by hand):

- recall@k = |top-k ∩ relevant| / |relevant|
- hit_rate@k = 1 if top-k ∩ relevant is non-empty else 0  (HR@k of the session protocol)
- ndcg@k = DCG@k / IDCG@k, DCG = sum over hits at rank r (1-based) of 1 / log2(r + 1),
  IDCG = the DCG of min(|relevant|, k) hits at the top
- map@k = (1 / min(|relevant|, k)) * sum over hits at rank r of precision@r
- catalogue coverage@k = distinct ids in all top-k lists / catalogue size

Duplicates in a recommended list count once (at their first rank). An empty
relevant set is undefined: such users must be left out by the caller (a
ValueError says so).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np


def _top_k(recommended: Sequence[int], k: int) -> list[int]:
    if k < 1:
        raise ValueError("k must be >= 1")
    seen: set[int] = set()
    out = []
    for item in recommended:
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def _check(relevant: Collection[int]) -> None:
    if len(relevant) == 0:
        raise ValueError("relevant set is empty: leave such users out of the evaluation")


def recall_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    _check(relevant)
    hits = sum(1 for item in _top_k(recommended, k) if item in relevant)
    return hits / len(relevant)


def hit_rate_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    _check(relevant)
    return 1.0 if any(item in relevant for item in _top_k(recommended, k)) else 0.0


def ndcg_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    _check(relevant)
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(_top_k(recommended, k)) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal


def map_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    _check(relevant)
    hits, total = 0, 0.0
    for rank, item in enumerate(_top_k(recommended, k), start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def catalogue_coverage(lists: Iterable[Sequence[int]], catalogue_size: int, k: int) -> float:
    if catalogue_size < 1:
        raise ValueError("catalogue_size must be >= 1")
    distinct: set[int] = set()
    for recommended in lists:
        distinct.update(_top_k(recommended, k))
    return len(distinct) / catalogue_size


METRICS = {"recall": recall_at_k, "ndcg": ndcg_at_k, "map": map_at_k, "hit_rate": hit_rate_at_k}


def evaluate_lists(
    lists: Sequence[Sequence[int]], relevant: Sequence[Collection[int]], k: int, catalogue_size: int | None = None
) -> dict[str, float]:
    """Mean recall / ndcg / map / hit_rate @k over users (and coverage when the catalogue size is given)."""
    if len(lists) != len(relevant):
        raise ValueError("one recommended list per relevant set")
    if not lists:
        raise ValueError("nothing to evaluate")
    out = {f"{name}@{k}": float(np.mean([fn(r, rel, k) for r, rel in zip(lists, relevant)]))
           for name, fn in METRICS.items()}  # fmt: skip
    if catalogue_size is not None:
        out[f"coverage@{k}"] = catalogue_coverage(lists, catalogue_size, k)
    out["users"] = len(lists)
    return out
