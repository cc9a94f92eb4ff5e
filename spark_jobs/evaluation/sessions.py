"""Next-item prediction in sessions, the protocol of the Transformers4Rec paper (REES46 / OpenCDP).

Each session becomes its sequence of products (every event type, consecutive
repeats of the same product collapsed, at most the last `max_length` items);
sessions shorter than two items are dropped. The model sees all items but the
last and ranks the *whole* catalogue (no sampled negatives); the target is the
last item. Metrics: NDCG@20 and HR@20 (one relevant item per session).

Split in time: similarities are learned only from events strictly before the
split, and only sessions that start at or after it are tested. With two or more
days of data the split is the start of the last full day; a sample of a few
minutes is split where `split_fraction` of its events lie before.

Session-based scorer (`session_knn`): the prefix's most recent items vote for
their also-viewed neighbours (cosine on session co-occurrence, top-K), the
latest item weighing most (1, 1/2, 1/3 ...); short lists are filled with the
globally most viewed products. ``popular`` (the fill alone) is the reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from spark_jobs.candidates.bots import BotRule, detect_bots
from spark_jobs.candidates.item_item import ItemItemParams, item_neighbours
from spark_jobs.evaluation.metrics import hit_rate_at_k, ndcg_at_k
from spark_jobs.evaluation.temporal import lists_from_scores, default_test_day

log = logging.getLogger(__name__)

#: Published figures on the whole of October 2019 (Transformers4Rec paper, REES46 e-commerce, next-item, full
#: catalogue). A different scale and training regime from ours: quoted for orientation, not comparable.
REFERENCE_FIGURES: tuple[tuple[str, float, float], ...] = (
    ("V-SkNN", 0.2187, 0.4662),
    ("GRU4Rec", 0.2231, 0.4414),
    ("XLNet (T4Rec)", 0.2546, 0.4886),
)


@dataclass(frozen=True)
class SessionParams:
    k: int = 20
    max_length: int = 20  #: items kept per session (the newest)
    recent_items: int = 5  #: prefix items that vote
    split_fraction: float = 0.8  #: for data shorter than two days
    item_item: ItemItemParams = field(default_factory=ItemItemParams)
    bot_rule: BotRule | None = field(default_factory=BotRule)


@dataclass(frozen=True)
class SessionResult:
    dataset: str
    split: str
    train_events: int
    test_sessions: int
    scores: dict[str, dict[str, float]]  #: model -> {"ndcg@20": .., "hr@20": ..}


def session_sequences(events: pa.Table, max_length: int) -> tuple[list[list[int]], np.ndarray]:
    """Per session: products in time order, consecutive repeats collapsed, newest `max_length` kept; and start times."""
    events = events.filter(pc.is_valid(events["user_session"]))
    if events.num_rows == 0:
        return [], np.empty(0, np.int64)
    sessions = pc.dictionary_encode(events["user_session"]).combine_chunks().indices.to_numpy()
    items = events["product_id"].to_numpy()
    micros = pc.cast(events["event_time"], pa.int64()).to_numpy()
    order = np.lexsort((micros, sessions))
    s, i, t = sessions[order], items[order], micros[order]
    keep = np.r_[True, (s[1:] != s[:-1]) | (i[1:] != i[:-1])]
    s, i, t = s[keep], i[keep], t[keep]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    seqs = [i[max(a, b - max_length) : b].tolist() for a, b in zip(starts, ends)]
    return seqs, t[starts]


def split_time(events: pa.Table, split_fraction: float) -> tuple[datetime, str]:
    bounds = pc.min_max(events["event_time"]).as_py()
    if bounds["max"] - bounds["min"] >= timedelta(days=2):
        day = default_test_day(events)
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc), f"last day ({day})"
    micros = np.sort(pc.cast(events["event_time"], pa.int64()).to_numpy())
    at_us = int(micros[min(int(len(micros) * split_fraction), len(micros) - 1)])
    at = datetime.fromtimestamp(at_us / 1_000_000, tz=timezone.utc)
    return at, f"{split_fraction:.0%} of the events ({at:%Y-%m-%d %H:%M:%S})"


def evaluate_sessions(events: pa.Table, dataset: str, params: SessionParams = SessionParams()) -> SessionResult:
    """Next-item NDCG@k and HR@k for the session kNN scorer and the popularity reference."""
    if params.bot_rule is not None:
        bots = detect_bots(events, params.bot_rule)
        if bots:
            events = events.filter(pc.invert(pc.is_in(events["user_id"], value_set=pa.array(sorted(bots), pa.int64()))))
    at, label = split_time(events, params.split_fraction)
    cut = pa.scalar(at, events["event_time"].type)
    train = events.filter(pc.less(events["event_time"], cut))
    seqs, starts = session_sequences(events, params.max_length)
    at_us = int(at.timestamp() * 1_000_000)
    tests = [seq for seq, start in zip(seqs, starts) if start >= at_us and len(seq) >= 2]
    if not tests or train.num_rows == 0:
        raise ValueError(f"{dataset}: no test sessions with >= 2 items after {label}, or nothing before it")
    k = params.k
    views = train.filter(pc.equal(train["event_type"], "view"))
    counts = views.group_by("product_id").aggregate([("user_id", "count_distinct")]).sort_by(
        [("user_id_count_distinct", "descending"), ("product_id", "ascending")])  # fmt: skip
    fill = counts["product_id"].to_pylist()[: max(k, 100)]

    nb = item_neighbours(train, "also_viewed", params.item_item)
    rows, cols, vals = [], [], []
    for row, seq in enumerate(tests):
        prefix = seq[:-1][-params.recent_items :]
        idx = nb.index_of(np.array(prefix[::-1], dtype=np.int64)) if len(nb.item_ids) else np.full(len(prefix), -1)
        for age, col in enumerate(idx):
            if col >= 0:
                rows.append(row)
                cols.append(col)
                vals.append(1.0 / (age + 1))
    query = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(len(tests), max(len(nb.item_ids), 1)))
    if len(nb.item_ids):
        scores = nb.score_items(query)
        knn_lists = lists_from_scores(scores, nb.item_ids, k, fill)
    else:
        knn_lists = [fill[:k]] * len(tests)
    targets = [{seq[-1]} for seq in tests]
    out = {}
    for name, lists in (("popular", [fill[:k]] * len(tests)), ("session_knn", knn_lists)):
        out[name] = {
            f"ndcg@{k}": float(np.mean([ndcg_at_k(r, t, k) for r, t in zip(lists, targets)])),
            f"hr@{k}": float(np.mean([hit_rate_at_k(r, t, k) for r, t in zip(lists, targets)])),
        }
    log.info("sessions %s: split at %s, %d train events, %d test sessions: %s", dataset, label, train.num_rows,
             len(tests), out)  # fmt: skip
    return SessionResult(dataset, label, train.num_rows, len(tests), out)
