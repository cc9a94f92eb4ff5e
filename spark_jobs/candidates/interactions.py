"""Click events -> weighted implicit feedback (pure: Arrow / numpy / scipy, no Spark).

Each event contributes ``weight[event_type] * 0.5 ** (age / half_life)`` to its
(user, product) cell, where ``age`` is measured back from a reference time (by
default the newest event). Bots are left out: those named explicitly (e.g. the
synthetic generator's ground truth, or an operator's block list) and those the
event-rate rule of `spark_jobs.candidates.bots` flags.

The result, `Interactions`, holds a users x items CSR matrix of confidences and
the index <-> id mappings; both ALS engines, the item-kNN scorer and the
evaluation read it, so every model learns from exactly the same feedback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from producer.events import EventType
from spark_jobs.candidates.bots import BotRule, detect_bots
from spark_jobs.candidates.lookup import index_in_sorted

log = logging.getLogger(__name__)

#: Default weight per event type: a purchase says more than a cart, a cart more than a view.
DEFAULT_WEIGHTS: tuple[tuple[str, float], ...] = (
    (EventType.VIEW.value, 1.0),
    (EventType.CART.value, 4.0),
    (EventType.PURCHASE.value, 8.0),
    (EventType.LIKE.value, 2.0),
    (EventType.WISHLIST.value, 2.0),
    (EventType.SAVE_FOR_LATER.value, 2.0),
    (EventType.REMOVE_FROM_CART.value, 0.0),
)


@dataclass(frozen=True)
class InteractionParams:
    """How events become confidences."""

    weights: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS  #: (event_type, weight); unknown types weigh 0
    half_life_days: float | None = 7.0  #: recency decay; None = no decay
    bot_rule: BotRule | None = field(default_factory=BotRule)  #: None = no rate-based detection

    def __post_init__(self) -> None:
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValueError("half_life_days must be > 0 (or None for no decay)")
        if any(w < 0 for _, w in self.weights):
            raise ValueError("event weights must be >= 0")

    @property
    def weight_map(self) -> dict[str, float]:
        return dict(self.weights)

    @classmethod
    def with_weights(cls, weights: Mapping[str, float], **kwargs: object) -> InteractionParams:
        merged = {**dict(DEFAULT_WEIGHTS), **weights}
        return cls(weights=tuple(sorted(merged.items())), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class Interactions:
    """A users x items confidence matrix with its id mappings."""

    matrix: sp.csr_matrix  #: float32 confidences, rows = user index, columns = item index
    user_ids: np.ndarray  #: int64, index -> user_id (sorted)
    item_ids: np.ndarray  #: int64, index -> product_id (sorted)
    bots: frozenset[int]  #: user ids that were left out
    reference_time: datetime | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def user_index(self, user_ids: Iterable[int]) -> np.ndarray:
        """Index of each user id, -1 where unknown."""
        return index_in_sorted(self.user_ids, np.asarray(list(user_ids), dtype=np.int64))

    def item_index(self, item_ids: Iterable[int]) -> np.ndarray:
        """Index of each product id, -1 where unknown."""
        return index_in_sorted(self.item_ids, np.asarray(list(item_ids), dtype=np.int64))

    def mapping_tables(self) -> tuple[pa.Table, pa.Table]:
        """(user_index, user_id) and (item_index, product_id) as Arrow tables."""
        users = pa.table({"user_index": pa.array(np.arange(len(self.user_ids), dtype=np.int32)),
                          "user_id": pa.array(self.user_ids)})  # fmt: skip
        items = pa.table({"item_index": pa.array(np.arange(len(self.item_ids), dtype=np.int32)),
                          "product_id": pa.array(self.item_ids)})  # fmt: skip
        return users, items

    def triples(self) -> pa.Table:
        """(user_index, item_index, confidence) rows: the input Spark ALS takes."""
        coo = self.matrix.tocoo()
        return pa.table({
            "user_index": pa.array(coo.row.astype(np.int32)),
            "item_index": pa.array(coo.col.astype(np.int32)),
            "confidence": pa.array(coo.data.astype(np.float32)),
        })  # fmt: skip


def event_weights(events: pa.Table, params: InteractionParams, reference_time: datetime | None = None) -> np.ndarray:
    """The weight of every event row: type weight times recency decay (float64)."""
    weight_of = params.weight_map
    types = events["event_type"]
    uniq = pc.unique(types).to_pylist()
    codes = pc.index_in(types, value_set=pa.array(uniq, pa.string())).to_numpy(zero_copy_only=False)
    table = np.array([weight_of.get(t, 0.0) if t is not None else 0.0 for t in uniq], dtype=np.float64)
    base = table[codes] if len(uniq) else np.zeros(events.num_rows)
    if params.half_life_days is None or events.num_rows == 0:
        return base
    micros = pc.cast(events["event_time"], pa.int64()).to_numpy()
    ref = int(reference_time.timestamp() * 1_000_000) if reference_time else int(micros.max())
    age_days = np.maximum(ref - micros, 0) / 86_400e6
    return base * np.exp2(-age_days / params.half_life_days)


def build_interactions(
    events: pa.Table,
    params: InteractionParams = InteractionParams(),
    *,
    bot_user_ids: Iterable[int] = (),
    reference_time: datetime | None = None,
) -> Interactions:
    """Aggregate events into per (user, product) confidences, bots excluded; zero-weight cells dropped."""
    bots = frozenset(int(u) for u in bot_user_ids)
    if params.bot_rule is not None:
        detected = detect_bots(events, params.bot_rule)
        log.info("bot rule %s flags %d users (%d named explicitly)", params.bot_rule, len(detected), len(bots))
        bots = bots | detected
    if bots:
        keep = pc.invert(pc.is_in(events["user_id"], value_set=pa.array(sorted(bots), pa.int64())))
        events = events.filter(keep)
    weights = event_weights(events, params, reference_time)
    positive = weights > 0
    users = events["user_id"].to_numpy()[positive]
    items = events["product_id"].to_numpy()[positive]
    weights = weights[positive]
    user_ids, user_idx = np.unique(users, return_inverse=True)
    item_ids, item_idx = np.unique(items, return_inverse=True)
    matrix = sp.csr_matrix(
        (weights.astype(np.float64), (user_idx, item_idx)), shape=(len(user_ids), len(item_ids))
    )  # duplicate cells are summed
    matrix.sum_duplicates()
    matrix = matrix.astype(np.float32)
    ref = reference_time
    if ref is None and events.num_rows:
        ref = pc.max(events["event_time"]).as_py()
    log.info("interactions: %d users x %d items, %d non-zeros from %d events", *matrix.shape, matrix.nnz, len(weights))
    return Interactions(matrix=matrix, user_ids=user_ids.astype(np.int64), item_ids=item_ids.astype(np.int64),
                        bots=bots, reference_time=ref)  # fmt: skip
