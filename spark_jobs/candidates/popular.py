"""Popular lists: best sellers and most viewed, overall and per category, over recent windows.

Windows are measured back from the newest event of the data (not the wall
clock), so a replayed October file gives October's "last day" and "last week".
Bots are excluded by the caller (the same set the interactions leave out).
Counts are distinct users per product (one shopper refreshing a page 50 times
is one vote), ties broken by raw event count then product id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class PopularParams:
    windows_days: tuple[int, ...] = (1, 7)  #: look-back windows, in days of data
    metrics: tuple[str, ...] = ("purchase", "view")  #: event types ranked on
    top_k: int = 100  #: products kept per (window, metric, category)

    def __post_init__(self) -> None:
        if not self.windows_days or min(self.windows_days) < 1 or self.top_k < 1:
            raise ValueError("windows_days must be >= 1 and top_k >= 1")


POPULAR_SCHEMA = pa.schema([
    ("window_days", pa.int32()),
    ("metric", pa.string()),
    ("category_id", pa.int64()),  # null = all categories
    ("category_code", pa.string()),
    ("product_id", pa.int64()),
    ("users", pa.int64()),
    ("events", pa.int64()),
    ("rank", pa.int32()),
])  # fmt: skip


def _ranked(table: pa.Table, keys: Sequence[str], top_k: int) -> pa.Table:
    """Per group of `keys`: products by (users desc, events desc, product_id asc), top_k kept, ranked from 1."""
    grouped = table.group_by([*keys, "product_id"]).aggregate(
        [("user_id", "count_distinct"), ("user_id", "count")]
    ).rename_columns([*keys, "product_id", "users", "events"])
    df = grouped.to_pandas()
    if df.empty:
        return grouped.append_column("rank", pa.array([], pa.int32()))
    df = df.sort_values([*keys, "users", "events", "product_id"], ascending=[True] * len(keys) + [False, False, True])
    df["rank"] = df.groupby(list(keys), dropna=False).cumcount().astype("int32") + 1 if keys else range(1, len(df) + 1)
    df = df[df["rank"] <= top_k]
    return pa.Table.from_pandas(df, preserve_index=False)


def popular_lists(events: pa.Table, params: PopularParams = PopularParams()) -> pa.Table:
    """All popular lists in one table (`POPULAR_SCHEMA`); category_id null for the global lists."""
    if events.num_rows == 0:
        return POPULAR_SCHEMA.empty_table()
    end = pc.max(events["event_time"]).as_py()
    codes = (
        events.select(["category_id", "category_code"]).filter(pc.is_valid(events["category_id"]))
        .group_by("category_id").aggregate([("category_code", "max")])
        .rename_columns(["category_id", "category_code"])
    )  # fmt: skip
    parts = []
    for days in params.windows_days:
        recent = events.filter(pc.greater(events["event_time"], pa.scalar(end - timedelta(days=days), events["event_time"].type)))
        for metric in params.metrics:
            rows = recent.filter(pc.equal(recent["event_type"], metric)).select(["category_id", "product_id", "user_id"])
            overall = _ranked(rows.select(["product_id", "user_id"]), [], params.top_k)
            overall = overall.append_column("category_id", pa.nulls(overall.num_rows, pa.int64()))
            overall = overall.append_column("category_code", pa.nulls(overall.num_rows, pa.string()))
            per_cat = _ranked(rows.filter(pc.is_valid(rows["category_id"])), ["category_id"], params.top_k)
            per_cat = per_cat.join(codes, "category_id", join_type="left outer")
            for part in (overall, per_cat):
                part = part.append_column("window_days", pa.array([days] * part.num_rows, pa.int32()))
                part = part.append_column("metric", pa.array([metric] * part.num_rows, pa.string()))
                parts.append(part.select(POPULAR_SCHEMA.names).cast(POPULAR_SCHEMA))
    table = pa.concat_tables(parts)
    table = table.append_column("_global", pc.is_null(table["category_id"]))  # global lists first
    keys = [("window_days", "ascending"), ("metric", "ascending"), ("_global", "descending"),
            ("category_id", "ascending"), ("rank", "ascending")]  # fmt: skip
    return table.sort_by(keys).drop_columns(["_global"])
