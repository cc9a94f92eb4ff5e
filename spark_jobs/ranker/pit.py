"""Point-in-time online features: what `OnlineStore.read` would have returned at a past instant.

For a cutoff ``c`` the stream would have seen exactly the events before ``c``.
`snapshot` keeps those, runs the stream's own window functions over them
(`spark_jobs.features.batch_features`, the offline recomputation the
online == offline test checks against Redis), keeps the window or bucket a
reader at ``c`` reads (`feature_store.online.bucket_for_read`), and passes each
row through the Redis codec so values have the types and rounding the API sees.

Only the events a group's read can depend on are handed to Spark: the last
two minutes and a slide for the sliding groups, the previous and the current
bucket for the tumbling ones, and the chosen sessions' events for the session
group. Nothing at or after ``c`` is ever read (tests/unit/test_ranker_dataset.py
changes every later event and checks the features do not move).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession

from feature_store.definitions import SESSION_FEATURES, USER_2M, FeatureGroup, Window
from feature_store.online import bucket_for_read, decode_features, encode_features
from spark_jobs.ranker.features import PRODUCT_READS
from spark_jobs.features import batch_features

Rows = dict[Any, dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The online features at `at`, keyed like the store: user / session / product id -> decoded row."""

    at: float
    user_2m: Rows = field(default_factory=dict)
    session: Rows = field(default_factory=dict)
    product_2m: Rows = field(default_factory=dict)
    product_1h: Rows = field(default_factory=dict)
    product_1h_prev: Rows = field(default_factory=dict)
    product_1d: Rows = field(default_factory=dict)
    product_1d_prev: Rows = field(default_factory=dict)


def _between(events: pa.Table, start: float, end: float) -> pa.Table:
    t = events["event_time"].type
    lo = pa.scalar(datetime.fromtimestamp(start, UTC), t)
    hi = pa.scalar(datetime.fromtimestamp(end, UTC), t)
    return events.filter(pc.and_(pc.greater_equal(events["event_time"], lo), pc.less(events["event_time"], hi)))


def _bucket_start(group: FeatureGroup, at: float) -> float:
    """Start of the window a reader at `at` reads (sliding: end - length; tumbling: the bucket)."""
    bucket = bucket_for_read(group, at)
    return bucket - group.length.total_seconds() if group.window is Window.SLIDING else bucket


#: Ids of cutoff i are shifted by i * TAG so that many cutoffs share ONE Spark job per group:
#: the window functions group by entity, so each (cutoff, entity) is its own group. Ids in the
#: OpenCDP files are below 10^10 (users ~6e8, products ~1e8).
TAG = 10**10


def _tagged(parts: list[pa.Table]) -> pa.Table:
    """Concatenate per-cutoff event slices, making their ids distinct per cutoff (see TAG)."""
    tables = []
    for i, part in enumerate(parts):
        shift = pa.scalar(i * TAG, pa.int64())
        part = part.set_column(part.schema.get_field_index("user_id"), "user_id", pc.add(part["user_id"], shift))
        part = part.set_column(part.schema.get_field_index("product_id"), "product_id", pc.add(part["product_id"], shift))
        session = pc.binary_join_element_wise(pa.scalar(f"{i}|"), part["user_session"], "")
        part = part.set_column(part.schema.get_field_index("user_session"), "user_session", session)
        tables.append(part)
    return pa.concat_tables(tables)


def _untag(value: Any) -> tuple[int, Any]:
    """(cutoff index, original id) of a tagged id (entity ids of windowed groups come back as text)."""
    if isinstance(value, str) and "|" in value:
        i, _, rest = value.partition("|")
        return int(i), rest
    return int(value) // TAG, int(value) % TAG


def _group_rows(spark: SparkSession, parts: list[pa.Table], group: FeatureGroup, buckets: list[float | None]) -> list[Rows]:
    """Per cutoff i: entity -> decoded row of `group` over the events parts[i], in the window buckets[i]."""
    out: list[Rows] = [{} for _ in parts]
    tagged = _tagged(parts)
    if tagged.num_rows == 0:
        return out
    column = {Window.SLIDING: "window_end", Window.TUMBLING: "window_start"}.get(group.window)
    for row in batch_features(spark.createDataFrame(tagged.to_pandas()), group).toLocalIterator():
        values = row.asDict()
        i, entity = _untag(values["entity_id"])
        if column is not None and values[column].timestamp() != buckets[i]:
            continue
        if values.get("user_id") is not None:  # the session's user
            values["user_id"] = _untag(values["user_id"])[1]
        if values.get("recent_products") is not None:
            values["recent_products"] = [_untag(p)[1] for p in values["recent_products"]]
        key = entity if group.window is Window.SESSION else int(entity)
        out[i][key] = decode_features(group, encode_features(group, values))
    return out


def current_sessions(events: pa.Table, users: Iterable[int], at: float) -> dict[int, str]:
    """user -> the session of their latest event before `at`, if Redis would still hold it (TTL)."""
    before = _between(events, at - SESSION_FEATURES.ttl.total_seconds(), at)
    before = before.filter(pc.is_in(before["user_id"], value_set=pa.array(list(users), pa.int64())))
    before = before.filter(pc.is_valid(before["user_session"]))
    if before.num_rows == 0:
        return {}
    df = before.select(["user_id", "event_time", "user_session"]).to_pandas()
    latest = df.sort_values(["user_id", "event_time"]).groupby("user_id").tail(1)
    return dict(zip(latest["user_id"].astype(int), latest["user_session"]))


def snapshots(spark: SparkSession, events: pa.Table, cutoffs: list[datetime], sessions: list[Iterable[str]]) -> list[Snapshot]:
    """The features of every user and product (and of the given sessions) as a reader at each cutoff would see them."""
    times = [c.timestamp() for c in cutoffs]
    out: dict[str, list[Rows]] = {}
    for name, group, offset in (("user_2m", USER_2M, 0.0), *PRODUCT_READS):
        buckets, parts = [], []
        for c in times:
            read_at = c - offset
            start = _bucket_start(group, read_at)
            parts.append(_between(events, start, min(start + group.length.total_seconds(), c)))
            buckets.append(float(bucket_for_read(group, read_at)))
        out[name] = _group_rows(spark, parts, group, buckets)
    # a session's events before the cutoff (not one copy of the whole history per cutoff)
    with_session = events.filter(pc.is_valid(events["user_session"]))
    parts = []
    for c, wanted in zip(times, sessions):
        mine = with_session.filter(pc.is_in(with_session["user_session"], value_set=pa.array(sorted(set(wanted)), pa.string())))
        parts.append(_between(mine, 0.0, c))
    out["session"] = _group_rows(spark, parts, SESSION_FEATURES, [None] * len(parts))
    return [Snapshot(at=c, **{name: rows[i] for name, rows in out.items()}) for i, c in enumerate(times)]


def snapshot(spark: SparkSession, events: pa.Table, at: datetime, sessions: Iterable[str] = ()) -> Snapshot:
    """`snapshots` for one cutoff."""
    return snapshots(spark, events, [at], [list(sessions)])[0]


def recent_users(events: pa.Table, at: datetime, within: timedelta) -> pd.Series:
    """Users with an event in [at - within, at): those a request at `at` is plausibly for."""
    c = at.timestamp()
    active = _between(events, c - within.total_seconds(), c)
    return pd.Series(pc.unique(active["user_id"]).to_numpy()).sort_values(ignore_index=True)
