"""Implicit-feedback ALS with the `implicit` library (CPU), plus the shared factor scoring.

Both engines end in the same `FactorModel` (user and item factors, float32), and
`recommend_top_n` turns any `FactorModel` into per-user top-N lists with
implicit's multithreaded top-k, so the two engines differ only in training.
BLAS is limited to one thread while implicit's own threads (`num_threads`) do
the parallel work: that is implicit's advice and measured fastest here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ALSParams:
    """Hyper-parameters shared by both ALS engines (confidence = 1 + alpha * weight)."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 10  #: 10 and 15 score the same on the synthetic evaluation; 10 keeps October scale < 3 min
    seed: int = 42
    num_threads: int = 2  #: implicit's threads (0 = all cores); BLAS stays at one thread

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ValueError("factors and iterations must be >= 1")
        if self.regularization < 0 or self.alpha <= 0:
            raise ValueError("regularization must be >= 0 and alpha > 0")


@dataclass(frozen=True, eq=False)
class FactorModel:
    """What ALS learns: one vector per user and per item; score = user . item."""

    user_factors: np.ndarray  #: (n_users, factors) float32
    item_factors: np.ndarray  #: (n_items, factors) float32
    train_seconds: float = 0.0

    def factor_tables(self) -> tuple[pa.Table, pa.Table]:
        """(user_index, factors) and (item_index, factors) as Arrow tables (fixed-size lists)."""
        return _factor_table("user_index", self.user_factors), _factor_table("item_index", self.item_factors)

    @classmethod
    def from_tables(cls, users: pa.Table, items: pa.Table) -> FactorModel:
        return cls(_factors_from_table(users, "user_index"), _factors_from_table(items, "item_index"))


def _factor_table(index_name: str, factors: np.ndarray) -> pa.Table:
    n, k = factors.shape
    flat = pa.array(np.ascontiguousarray(factors, dtype=np.float32).reshape(-1))
    return pa.table({index_name: pa.array(np.arange(n, dtype=np.int32)),
                     "factors": pa.FixedSizeListArray.from_arrays(flat, k)})  # fmt: skip


def _factors_from_table(table: pa.Table, index_name: str) -> np.ndarray:
    table = table.sort_by(index_name)
    column = table["factors"].combine_chunks()
    k = column.type.list_size
    return column.values.to_numpy().reshape(-1, k).astype(np.float32)


def train_implicit(matrix: sp.csr_matrix, params: ALSParams = ALSParams(), *, progress: bool = True) -> FactorModel:
    """Fit implicit's CPU ALS on a users x items confidence matrix."""
    from implicit.cpu.als import AlternatingLeastSquares

    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # before the constructor: it checks the BLAS config
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            num_threads=params.num_threads,
        )
        model.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=progress)
    elapsed = time.perf_counter() - started
    log.info("implicit ALS: %d x %d, %d nnz, %d factors, %d iterations in %.1f s",
             *matrix.shape, matrix.nnz, params.factors, params.iterations, elapsed)  # fmt: skip
    return FactorModel(np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32), elapsed)


def recommend_top_n(
    model: FactorModel,
    n: int,
    *,
    seen: sp.csr_matrix | None = None,
    users: np.ndarray | None = None,
    batch_size: int = 20_000,
    num_threads: int = 2,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-`n` items per user by dot product: (user_index, item_index, score) flat arrays, best first per user.

    `seen` (users x items) removes each user's already-seen items when given.
    """
    from implicit.cpu.topk import topk

    users = np.arange(len(model.user_factors)) if users is None else np.asarray(users)
    n = min(n, model.item_factors.shape[0])
    out_u, out_i, out_s = [], [], []
    with threadpool_limits(limits=1, user_api="blas"), tqdm(
        total=len(users), unit="users", unit_scale=True, disable=not progress, desc="top-n", dynamic_ncols=True
    ) as bar:
        for lo in range(0, len(users), batch_size):
            batch = users[lo : lo + batch_size]
            query = model.user_factors[batch]
            filt = seen[batch] if seen is not None else None
            ids, scores = topk(model.item_factors, query, n, filter_query_items=filt, num_threads=num_threads)
            valid = np.isfinite(scores) & (ids >= 0)
            out_u.append(np.repeat(batch, valid.sum(axis=1)))
            out_i.append(ids[valid])
            out_s.append(scores[valid])
            bar.update(len(batch))
    if not out_u:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out_u), np.concatenate(out_i).astype(np.int64), np.concatenate(out_s).astype(np.float32)
