"""Item-to-item neighbours from co-occurrence within sessions ("also viewed", "also bought").

Each session is a set of distinct products (views for "also viewed"; carts and
purchases for "also bought"). Two products are similar when they share
sessions: cosine of their binary session vectors,
``co(i, j) / sqrt(n(i) * n(j))``, optionally shrunk towards zero for rare pairs
(``co / (co + shrinkage)``). Only the top-K neighbours per item are kept.

`ItemNeighbours` is also the scorer of the session-based path: a session's
recent items vote for their neighbours (`score_sessions`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from tqdm import tqdm

from spark_jobs.candidates.lookup import index_in_sorted

log = logging.getLogger(__name__)

VIEWED = ("view",)
BOUGHT = ("cart", "purchase")


@dataclass(frozen=True)
class ItemItemParams:
    top_k: int = 100  #: neighbours kept per item
    min_co_count: int = 1  #: pairs seen together in fewer sessions are dropped
    shrinkage: float = 0.0  #: cosine * co / (co + shrinkage): damps pairs seen together once or twice
    max_session_items: int = 50  #: longer sessions (crawlers missed by the bot rule) are cut to their last items

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.min_co_count < 1 or self.max_session_items < 2 or self.shrinkage < 0:
            raise ValueError("top_k >= 1, min_co_count >= 1, max_session_items >= 2, shrinkage >= 0")


@dataclass(frozen=True, eq=False)
class ItemNeighbours:
    """Top-K neighbours per item as a sparse items x items matrix over `item_ids`."""

    similarity: sp.csr_matrix  #: row i holds the top-K neighbours of item i (float32)
    item_ids: np.ndarray  #: int64 index -> product_id (sorted)
    kind: str

    def to_table(self) -> pa.Table:
        """product_id, neighbour_id, score, rank (1 = most similar), kind."""
        coo = self.similarity.tocoo()
        order = np.lexsort((-coo.data, coo.row))
        rows, cols, data = coo.row[order], coo.col[order], coo.data[order]
        starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
        rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)])) + 1
        return pa.table({
            "product_id": pa.array(self.item_ids[rows]),
            "neighbour_id": pa.array(self.item_ids[cols]),
            "score": pa.array(data.astype(np.float32)),
            "rank": pa.array(rank.astype(np.int32)),
            "kind": pa.array(np.full(len(rows), self.kind, dtype=object), pa.string()),
        })  # fmt: skip

    @classmethod
    def from_table(cls, table: pa.Table, kind: str) -> ItemNeighbours:
        """The `kind` rows of an `item_neighbours.parquet` table (the inverse of `to_table`)."""
        rows = table.filter(pc.equal(table["kind"], kind))
        return cls.from_arrays(rows["product_id"].to_numpy(), rows["neighbour_id"].to_numpy(),
                               rows["score"].to_numpy(), kind)  # fmt: skip

    @classmethod
    def from_arrays(cls, source: np.ndarray, target: np.ndarray, score: np.ndarray, kind: str) -> ItemNeighbours:
        """From (product, neighbour, score) rows, one per pair."""
        item_ids = np.union1d(np.unique(source), np.unique(target))
        return cls.from_positions(item_ids, np.searchsorted(item_ids, source).astype(np.int32),
                                  np.searchsorted(item_ids, target).astype(np.int32), score, kind)  # fmt: skip

    @classmethod
    def from_positions(cls, item_ids: np.ndarray, rows: np.ndarray, columns: np.ndarray, score: np.ndarray,
                       kind: str) -> ItemNeighbours:  # fmt: skip
        """From pairs given as positions in `item_ids` (sorted), one per pair. The CSR arrays are these
        arrays themselves (sorted by row first, unless `to_table` wrote them so): a COO matrix and its
        conversion would hold three more copies of the pairs (GBs at October scale)."""
        n = len(item_ids)
        score = np.asarray(score, np.float32)
        if len(rows) > 1 and (rows[1:] < rows[:-1]).any():
            order = np.argsort(rows, kind="stable")
            rows, columns, score = rows[order], columns[order], score[order]
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        similarity = sp.csr_matrix((score, columns, indptr), shape=(n, n))
        similarity.sum_duplicates()  # canonical: sorted columns, one entry per pair
        return cls(similarity=similarity, item_ids=item_ids, kind=kind)

    def index_of(self, product_ids: np.ndarray) -> np.ndarray:
        return index_in_sorted(self.item_ids, product_ids)

    def score_items(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        """Scores over items for rows of item weights (rows x items): weights @ similarity."""
        return (weights @ self.similarity).tocsr()


def session_item_matrix(events: pa.Table, event_types: Sequence[str], max_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary sessions x items matrix over the given event types; returns it and the item ids."""
    events = events.filter(pc.is_in(events["event_type"], value_set=pa.array(list(event_types))))
    events = events.filter(pc.is_valid(events["user_session"]))
    if events.num_rows == 0:
        return sp.csr_matrix((0, 0), dtype=np.float32), np.empty(0, np.int64)
    sessions = pc.dictionary_encode(events["user_session"]).combine_chunks().indices.to_numpy()
    items = events["product_id"].to_numpy()
    micros = pc.cast(events["event_time"], pa.int64()).to_numpy()
    item_ids, item_idx = np.unique(items, return_inverse=True)
    # distinct (session, item), keeping each item's last time, then cut long sessions to their newest items
    order = np.lexsort((micros, item_idx, sessions))
    s, i, t = sessions[order], item_idx[order], micros[order]
    last = np.r_[(s[1:] != s[:-1]) | (i[1:] != i[:-1]), True]
    s, i, t = s[last], i[last], t[last]
    by_time = np.lexsort((-t, s))
    s, i = s[by_time], i[by_time]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    position = np.arange(len(s)) - np.repeat(starts, np.diff(np.r_[starts, len(s)]))
    keep = position < max_items
    s, i = s[keep], i[keep]
    n_sessions = int(sessions.max()) + 1
    matrix = sp.csr_matrix((np.ones(len(s), np.float32), (s, i)), shape=(n_sessions, len(item_ids)))
    return matrix, item_ids.astype(np.int64)


def top_k_rows(matrix: sp.csr_matrix, k: int, *, progress: bool = False, desc: str = "top-k") -> sp.csr_matrix:
    """Keep the `k` largest entries of each row."""
    matrix = matrix.tocsr()
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    new_indptr = np.zeros(len(indptr), dtype=np.int64)
    keep_idx = []
    lengths = np.diff(indptr)
    for row in tqdm(range(matrix.shape[0]), unit="items", unit_scale=True, disable=not progress, desc=desc,
                    dynamic_ncols=True, mininterval=1.0):  # fmt: skip
        lo, hi = indptr[row], indptr[row + 1]
        if hi - lo > k:
            part = np.argpartition(-data[lo:hi], k - 1)[:k] + lo
            keep_idx.append(part)
        else:
            keep_idx.append(np.arange(lo, hi))
        new_indptr[row + 1] = new_indptr[row] + min(lengths[row], k)
    sel = np.concatenate(keep_idx) if keep_idx else np.empty(0, np.int64)
    return sp.csr_matrix((data[sel], indices[sel], new_indptr), shape=matrix.shape)


def item_neighbours(
    events: pa.Table,
    kind: str = "also_viewed",
    params: ItemItemParams = ItemItemParams(),
    *,
    event_types: Sequence[str] | None = None,
    progress: bool = False,
) -> ItemNeighbours:
    """Cosine top-K neighbours from co-occurrence in sessions (`kind`: also_viewed or also_bought)."""
    types = event_types or (VIEWED if kind == "also_viewed" else BOUGHT)
    sessions, item_ids = session_item_matrix(events, types, params.max_session_items)
    if sessions.shape[1] == 0:
        return ItemNeighbours(sp.csr_matrix((0, 0), dtype=np.float32), item_ids, kind)
    sessions = sessions[np.asarray(sessions.sum(axis=1)).ravel() >= 2]  # a lone item co-occurs with nothing
    co = (sessions.T @ sessions).tocsr().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    if params.min_co_count > 1:
        co.data[co.data < params.min_co_count] = 0
        co.eliminate_zeros()
    counts = np.asarray(sessions.sum(axis=0)).ravel().astype(np.float32)
    norm = np.sqrt(np.maximum(counts, 1.0))
    sim = co.tocoo()
    data = sim.data / (norm[sim.row] * norm[sim.col])
    if params.shrinkage > 0:
        data = data * sim.data / (sim.data + params.shrinkage)
    sim = sp.csr_matrix((data.astype(np.float32), (sim.row, sim.col)), shape=co.shape)
    top = top_k_rows(sim, params.top_k, progress=progress, desc=kind)
    log.info("%s: %d items, %d sessions with >= 2 items, %d neighbour pairs kept",
             kind, len(item_ids), sessions.shape[0], top.nnz)  # fmt: skip
    return ItemNeighbours(top, item_ids, kind)
