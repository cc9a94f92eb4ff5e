"""User profiles: the `user_profile` feature group computed from a user's history (pure pandas).

A profile summarises every event strictly before `as_of`: counts (the purchase
model's `UserHistory` reads them too), the usual price level, the share of the
user's weighted activity per category and per brand, when the user last touched
each recent product and category, and what they bought lately. Repeated
identical rows count once (the purchase model's dedup keys).

`clickrec train ranker` materializes the profiles at the end of its data into
Redis (`OnlineStore.write_entities`); the training set computes them at each
day's start, the same staleness the API sees between two batch runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.definitions import ACTIVITY_WEIGHTS, USER_PROFILE
from producer.events import EventType
from spark_jobs.purchase_model.features import DEDUP_KEYS

_COLUMNS = ["event_time", "event_type", "product_id", "category_id", "brand", "price", "user_id", "user_session"]


def _frame(events: pa.Table, as_of: datetime) -> pd.DataFrame:
    events = events.select(_COLUMNS)
    events = events.filter(pc.less(events["event_time"], pa.scalar(as_of, events["event_time"].type)))
    micros = pc.cast(events["event_time"].cast(pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()
    df = events.drop(["event_time"]).to_pandas()
    df.insert(0, "event_time", micros)
    df = df.drop_duplicates(list(DEDUP_KEYS))
    df["t"] = df["event_time"] / 1e6
    df["weight"] = df["event_type"].map({k.value: max(v, 0.0) for k, v in ACTIVITY_WEIGHTS.items()}).fillna(0.0)
    return df


def _shares(df: pd.DataFrame, column: str, top: int) -> pd.Series:
    """user_id -> {value: share of the user's weighted activity} for the top values."""
    rows = df[df[column].notna() & (df[column] != "")]
    weights = rows.groupby(["user_id", column], sort=False)["weight"].sum().reset_index()
    totals = df.groupby("user_id")["weight"].sum()
    weights = weights[weights["weight"] > 0]
    weights["share"] = weights["weight"] / weights["user_id"].map(totals)
    weights = weights.sort_values(["user_id", "share", column], ascending=[True, False, True])
    weights = weights.groupby("user_id", sort=False).head(top)
    key = weights[column].astype("int64").astype(str) if column != "brand" else weights[column]
    return _dicts(weights.assign(_key=key, _value=weights["share"].round(6)))


def _last_seen(df: pd.DataFrame, column: str, top: int) -> pd.Series:
    """user_id -> {value: epoch of the user's latest event on it} for the latest `top` values."""
    rows = df[df[column].notna()]
    last = rows.groupby(["user_id", column], sort=False)["t"].max().reset_index()
    last = last.sort_values(["user_id", "t", column], ascending=[True, False, True]).groupby("user_id", sort=False).head(top)
    return _dicts(last.assign(_key=last[column].astype("int64").astype(str), _value=last["t"]))


def _dicts(rows: pd.DataFrame) -> pd.Series:
    """user_id -> {_key: _value} over the rows, in row order."""
    out: dict[int, dict] = {}
    for user, key, value in zip(rows["user_id"].to_numpy(), rows["_key"].to_numpy(), rows["_value"].to_numpy()):
        out.setdefault(int(user), {})[key] = float(value)
    return pd.Series(out, dtype=object)


def _bought(df: pd.DataFrame, top: int) -> pd.Series:
    """user_id -> the last `top` distinct products purchased, oldest first."""
    bought = df[df["event_type"] == EventType.PURCHASE.value]
    last = bought.groupby(["user_id", "product_id"], sort=False)["t"].max().reset_index()
    last = last.sort_values(["user_id", "t", "product_id"]).groupby("user_id", sort=False).tail(top)
    return last.groupby("user_id", sort=False)["product_id"].agg(list)


def user_profiles(events: pa.Table, as_of: datetime) -> pd.DataFrame:
    """One row per user with events before `as_of`: entity_id and every `USER_PROFILE` feature."""
    df = _frame(events, as_of)
    if df.empty:
        return pd.DataFrame(columns=["entity_id", *USER_PROFILE.names])
    n = {f.name: f.n for f in USER_PROFILE.features if f.n}
    by_user = df.groupby("user_id")
    counts = pd.DataFrame({
        "events": by_user.size(),
        "views": by_user["event_type"].agg(lambda s: int((s == "view").sum())),
        "carts": by_user["event_type"].agg(lambda s: int((s == "cart").sum())),
        "purchases": by_user["event_type"].agg(lambda s: int((s == "purchase").sum())),
        "sessions": by_user["user_session"].nunique(),
        "mean_price": by_user["price"].mean(),
    })  # fmt: skip
    purchase_sessions = df[df["event_type"] == "purchase"].groupby("user_id")["user_session"].nunique()
    counts["purchase_sessions"] = purchase_sessions.reindex(counts.index).fillna(0).astype(np.int64)
    counts["as_of"] = as_of.timestamp()
    counts["category_shares"] = _shares(df, "category_id", n["category_shares"])
    counts["brand_shares"] = _shares(df, "brand", n["brand_shares"])
    counts["product_last_seen"] = _last_seen(df, "product_id", n["product_last_seen"])
    counts["category_last_seen"] = _last_seen(df, "category_id", n["category_last_seen"])
    counts["bought_products"] = _bought(df, n["bought_products"])
    for name in ("category_shares", "brand_shares", "product_last_seen", "category_last_seen"):
        counts[name] = counts[name].apply(lambda v: v if isinstance(v, dict) else {})
    counts["bought_products"] = counts["bought_products"].apply(lambda v: v if isinstance(v, list) else [])
    counts = counts.reset_index().rename(columns={"user_id": "entity_id"})
    return counts[["entity_id", *USER_PROFILE.names]]


def profile_records(profiles: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows as the online store reads them back (None for missing values)."""
    for row in profiles.to_dict("records"):
        yield {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
