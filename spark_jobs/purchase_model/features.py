"""Features of a session prefix (and of the user's history before the session), leak-free by construction.

The prediction point
--------------------
A session's events are put in order (event_time, then view < cart <
remove_from_cart < purchase inside the same second, then product_id) after
repeated identical rows are removed. The prediction point ``k`` (0-based) is the
moment right after event ``k``: the inputs are events ``0..k`` of the session
(and the user's events strictly before the session's first event); the label is
1 when any event ``k+1..n-1`` of the same session is a purchase. A purchase is
therefore never an input of its own prediction point (the point just before
it), and nothing at or after the point is ever read: `prefix_feature_matrix`
fills row ``k`` in a single forward pass before it looks at event ``k+1``.

Why numpy/pandas and not Spark
------------------------------
The same function must answer one HTTP request (the API's
``/sessions/{id}/purchase-probability`` builds the list of the live session's
events from Redis and calls `session_features` then `score_session`) in
microseconds and without a JVM; one implementation for the online and the
offline path is what keeps the features identical (`build_training_set` calls
the very same `prefix_feature_matrix` per session). Offline, a single forward
pass per session is O(events); a 10M-row file makes a few million prediction
points, which fit in memory on one machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from producer.events import EventType

#: Event type -> code in the numeric arrays (everything else: OTHER).
VIEW, CART, REMOVE, PURCHASE, OTHER = 0, 1, 2, 3, 4
TYPE_CODES: dict[str, int] = {
    EventType.VIEW.value: VIEW,
    EventType.CART.value: CART,
    EventType.REMOVE_FROM_CART.value: REMOVE,
    EventType.PURCHASE.value: PURCHASE,
}

#: Features of the session's events up to and including the prediction point, in model order.
SESSION_FEATURES: tuple[str, ...] = (
    "events_so_far",  # events 0..k
    "views",
    "carts",
    "removes",
    "purchases_so_far",  # purchases before or at the point (a session may buy twice)
    "distinct_products",
    "distinct_categories",  # by category_id
    "max_views_one_product",  # how often the most re-viewed product was viewed
    "duration_s",  # event k time - event 0 time
    "last_gap_s",  # event k time - event k-1 time (NaN at k = 0)
    "mean_price_viewed",  # NaN before the first view
    "max_price_viewed",
    "hour_utc",  # hour of event k
    "carted",  # 1 if a cart event so far
    "cart_value",  # price of cart events minus removes (not below 0)
    "last_is_cart",  # event k is a cart
    "events_since_last_cart",  # NaN when nothing was carted
)
#: Features of the user's events strictly before the session's first event.
HISTORY_FEATURES: tuple[str, ...] = (
    "past_sessions",
    "past_purchase_sessions",
    "past_purchases",
    "past_views",
    "past_cart_rate",  # past carts / past views (NaN without past views)
)
#: The model's input, in this order (stored with the model; checked on load).
FEATURES: tuple[str, ...] = SESSION_FEATURES + HISTORY_FEATURES

#: Columns that identify a repeated row (the same as the analytics job's dedup).
DEDUP_KEYS: tuple[str, ...] = ("event_time", "event_type", "product_id", "user_id", "user_session", "price")


@dataclass(frozen=True)
class UserHistory:
    """What the user did before the session started (the API reads it from the online store)."""

    sessions: int = 0
    purchase_sessions: int = 0
    purchases: int = 0
    views: int = 0
    carts: int = 0

    def features(self) -> dict[str, float]:
        return {
            "past_sessions": float(self.sessions),
            "past_purchase_sessions": float(self.purchase_sessions),
            "past_purchases": float(self.purchases),
            "past_views": float(self.views),
            "past_cart_rate": self.carts / self.views if self.views > 0 else math.nan,
        }


#: History features when the user's history is unknown (XGBoost treats NaN as missing).
UNKNOWN_HISTORY: dict[str, float] = {name: math.nan for name in HISTORY_FEATURES}


def prefix_feature_matrix(
    times_s: np.ndarray, types: np.ndarray, products: np.ndarray, categories: np.ndarray, prices: np.ndarray
) -> np.ndarray:
    """Row k = `SESSION_FEATURES` after events 0..k of one session (arrays already in session order).

    `times_s`: unix seconds (float); `types`: codes of `TYPE_CODES`; `categories`:
    category ids, negative when unknown. One forward pass: row k is written
    before event k+1 is read, so a row can never depend on a later event.
    """
    n = len(times_s)
    out = np.full((n, len(SESSION_FEATURES)), np.nan)
    views = carts = removes = purchases = 0
    seen_products: set[int] = set()
    seen_categories: set[int] = set()
    views_of: dict[int, int] = {}
    max_views_one = 0
    sum_viewed = 0.0
    max_viewed = math.nan
    cart_value = 0.0
    last_cart = -1
    start = float(times_s[0]) if n else 0.0
    for k in range(n):
        kind, product, price, t = int(types[k]), int(products[k]), float(prices[k]), float(times_s[k])
        if kind == VIEW:
            views += 1
            sum_viewed += price
            max_viewed = price if math.isnan(max_viewed) else max(max_viewed, price)
            count = views_of.get(product, 0) + 1
            views_of[product] = count
            max_views_one = max(max_views_one, count)
        elif kind == CART:
            carts += 1
            cart_value += price
            last_cart = k
        elif kind == REMOVE:
            removes += 1
            cart_value = max(0.0, cart_value - price)
        elif kind == PURCHASE:
            purchases += 1
        seen_products.add(product)
        if categories[k] >= 0:
            seen_categories.add(int(categories[k]))
        row = out[k]
        row[0] = k + 1
        row[1] = views
        row[2] = carts
        row[3] = removes
        row[4] = purchases
        row[5] = len(seen_products)
        row[6] = len(seen_categories)
        row[7] = max_views_one
        row[8] = t - start
        row[9] = t - float(times_s[k - 1]) if k else math.nan
        row[10] = sum_viewed / views if views else math.nan
        row[11] = max_viewed
        row[12] = int(t // 3600) % 24
        row[13] = 1.0 if carts else 0.0
        row[14] = cart_value
        row[15] = 1.0 if kind == CART else 0.0
        row[16] = k - last_cart if last_cart >= 0 else math.nan
    return out


# --------------------------------------------------------------------------- #
# Online: one session as a list of events
# --------------------------------------------------------------------------- #


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("event_time needs a time zone")
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    if text.endswith(" UTC"):
        text = text[: -len(" UTC")] + "+00:00"
    return _epoch_seconds(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _sort_key(event: Mapping[str, Any]) -> tuple:
    return (event["_t"], TYPE_CODES.get(str(event["event_type"]), OTHER), int(event["product_id"]))


def order_session(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A session's events deduplicated (same `DEDUP_KEYS`) and in prediction order."""
    unique: dict[tuple, dict[str, Any]] = {}
    for event in events:
        e = dict(event)
        e["_t"] = _epoch_seconds(e["event_time"])
        key = (e["_t"], str(e["event_type"]), int(e["product_id"]), e.get("user_id"), e.get("user_session"), float(e["price"]))
        unique.setdefault(key, e)
    return sorted(unique.values(), key=_sort_key)


def _arrays(ordered: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
    times = np.fromiter((e["_t"] for e in ordered), float, len(ordered))
    types = np.fromiter((TYPE_CODES.get(str(e["event_type"]), OTHER) for e in ordered), np.int64, len(ordered))
    products = np.fromiter((int(e["product_id"]) for e in ordered), np.int64, len(ordered))
    cats = np.fromiter(
        (-1 if e.get("category_id") is None else int(e["category_id"]) for e in ordered), np.int64, len(ordered)
    )
    prices = np.fromiter((float(e["price"]) for e in ordered), float, len(ordered))
    return times, types, products, cats, prices


def session_features(events: Sequence[Mapping[str, Any]], history: UserHistory | None = None) -> dict[str, float]:
    """`FEATURES` at the point right after the last of `events` (a live session so far).

    `events`: mappings with event_time (aware datetime, ISO text or unix
    seconds), event_type, product_id, category_id (optional), price, and
    optionally user_id / user_session (used to drop repeated rows). `history`:
    the user's counts before the session; None = unknown (NaN features).
    """
    if not events:
        raise ValueError("a session needs at least one event")
    ordered = order_session(events)
    row = prefix_feature_matrix(*_arrays(ordered))[-1]
    features = dict(zip(SESSION_FEATURES, row.tolist()))
    features.update(history.features() if history is not None else UNKNOWN_HISTORY)
    return features


def feature_vector(features: Mapping[str, float]) -> np.ndarray:
    """A (1, len(FEATURES)) float32 row in model order; a missing name raises KeyError."""
    return np.array([[features[name] for name in FEATURES]], dtype=np.float32)


# --------------------------------------------------------------------------- #
# Offline: every session of a table
# --------------------------------------------------------------------------- #


def events_frame(table: pa.Table) -> pd.DataFrame:
    """Typed events (EVENT_SCHEMA) -> a deduplicated pandas frame in (session, prediction) order.

    Events without a session id are dropped (they belong to no prefix).
    """
    columns = ["event_time", "event_type", "product_id", "category_id", "price", "user_id", "user_session"]
    table = table.select(columns)
    micros = pc.cast(table["event_time"].cast(pa.timestamp("us", tz="UTC")), pa.int64())
    df = table.drop(["event_time"]).to_pandas()
    df.insert(0, "event_time", micros.to_numpy())  # int64 microseconds: dedup on the exact instant
    df["t"] = df["event_time"] / 1e6
    df = df[df["user_session"].notna()]
    df = df.drop_duplicates(list(DEDUP_KEYS))
    df["type_code"] = df["event_type"].map(TYPE_CODES).fillna(OTHER).astype(np.int64)
    df["cat"] = df["category_id"].fillna(-1).astype(np.int64)
    df = df.sort_values(["user_session", "t", "type_code", "product_id"], kind="stable").reset_index(drop=True)
    return df


def user_history(df: pd.DataFrame) -> pd.DataFrame:
    """Per session: its user, start, end and the user's `HISTORY_FEATURES` strictly before the start."""
    sessions = (
        df.groupby("user_session", sort=False)
        .agg(user_id=("user_id", "first"), start=("t", "min"), end=("t", "max"), purchased=("type_code", lambda s: bool((s == PURCHASE).any())))
        .reset_index()
    )
    # cumulative counts of each user's earlier sessions, by start time (ties: not "before")
    by_start = sessions.sort_values(["start", "user_session"]).copy()
    by_start["n_sessions"] = by_start.groupby("user_id").cumcount() + 1
    by_start["n_purchase_sessions"] = by_start.groupby("user_id")["purchased"].cumsum()
    # cumulative counts of each user's events by time
    ev = df[["user_id", "t", "type_code"]].sort_values("t", kind="stable").copy()
    for name, code in (("n_views", VIEW), ("n_carts", CART), ("n_purchases", PURCHASE)):
        ev[name] = (ev["type_code"] == code).astype(np.int64).groupby(ev["user_id"]).cumsum()
    ev = ev.drop(columns="type_code")
    left = sessions.sort_values("start")[["user_session", "user_id", "start", "end"]]
    merged = pd.merge_asof(
        left, by_start[["user_id", "start", "n_sessions", "n_purchase_sessions"]].rename(columns={"start": "s_start"}),
        left_on="start", right_on="s_start", by="user_id", allow_exact_matches=False, direction="backward",
    )  # fmt: skip
    merged = pd.merge_asof(
        merged, ev.rename(columns={"t": "e_t"}), left_on="start", right_on="e_t", by="user_id",
        allow_exact_matches=False, direction="backward",
    )  # fmt: skip
    counts = merged[["n_sessions", "n_purchase_sessions", "n_views", "n_carts", "n_purchases"]].fillna(0).astype(float)
    out = merged[["user_session", "user_id", "start", "end"]].copy()
    out["past_sessions"] = counts["n_sessions"].to_numpy()
    out["past_purchase_sessions"] = counts["n_purchase_sessions"].to_numpy()
    out["past_purchases"] = counts["n_purchases"].to_numpy()
    out["past_views"] = counts["n_views"].to_numpy()
    views = counts["n_views"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["past_cart_rate"] = np.where(views > 0, counts["n_carts"].to_numpy() / np.where(views > 0, views, 1), np.nan)
    return out.set_index("user_session")


def build_training_set(table: pa.Table, *, max_points_per_session: int | None = 20, seed: int = 0) -> pd.DataFrame:
    """One row per prediction point: user_session, user_id, point_index, point_time, session_start,
    session_end, label, then `FEATURES`.

    Sessions with more than `max_points_per_session` points keep a random
    sample of them (a bot's thousand-event session would dominate otherwise).
    """
    df = events_frame(table)
    if df.empty:
        return pd.DataFrame(columns=["user_session", "user_id", "point_index", "point_time", "session_start", "session_end", "label", *FEATURES])
    history = user_history(df)
    codes, starts = np.unique(df["user_session"].to_numpy(), return_index=True)
    order = np.argsort(starts)
    starts = starts[order]
    codes = codes[order]
    ends = np.append(starts[1:], len(df))
    t, ty, prod, cat, price = (df[c].to_numpy() for c in ("t", "type_code", "product_id", "cat", "price"))
    rng = np.random.default_rng(seed)
    blocks, meta = [], []
    for session, lo, hi in zip(codes, starts, ends):
        matrix = prefix_feature_matrix(t[lo:hi], ty[lo:hi], prod[lo:hi], cat[lo:hi], price[lo:hi])
        is_purchase = (ty[lo:hi] == PURCHASE).astype(np.int64)
        after = is_purchase[::-1].cumsum()[::-1] - is_purchase  # purchases strictly after each point
        points = np.arange(hi - lo)
        if max_points_per_session is not None and len(points) > max_points_per_session:
            points = np.sort(rng.choice(points, size=max_points_per_session, replace=False))
        blocks.append(matrix[points])
        meta.append((np.full(len(points), session, dtype=object), points, t[lo:hi][points], (after[points] > 0).astype(np.int8)))
    out = pd.DataFrame(np.vstack(blocks), columns=list(SESSION_FEATURES))
    out.insert(0, "user_session", np.concatenate([m[0] for m in meta]))
    out.insert(1, "point_index", np.concatenate([m[1] for m in meta]))
    out.insert(2, "point_time", np.concatenate([m[2] for m in meta]))
    out.insert(3, "label", np.concatenate([m[3] for m in meta]))
    hist = history.loc[out["user_session"].to_numpy()]
    out.insert(1, "user_id", hist["user_id"].to_numpy())
    out.insert(4, "session_start", hist["start"].to_numpy())
    out.insert(5, "session_end", hist["end"].to_numpy())
    for name in HISTORY_FEATURES:
        out[name] = hist[name].to_numpy()
    return out


def session_events(df: pd.DataFrame, session_id: str) -> list[dict[str, Any]]:
    """One session's events from `events_frame` as the list of mappings the API would pass."""
    part = df[df["user_session"] == session_id]
    return [
        {"event_time": r.t, "event_type": r.event_type, "product_id": r.product_id,
         "category_id": None if r.cat < 0 else r.cat, "price": r.price, "user_id": r.user_id, "user_session": r.user_session}
        for r in part.itertuples()
    ]  # fmt: skip

