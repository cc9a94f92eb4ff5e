"""Clickstream KPIs as pure DataFrame functions (events in, one small KPI table out).

Every function takes a DataFrame of click events with the columns of
`spark_jobs.schema.EVENT_SPARK_SCHEMA` (after `dedup_events`) and returns a
small DataFrame; none of them reads or writes anything. `spark_jobs.analytics.job`
wires them to the input and to the artifact store; tests run them on static
DataFrames.

Definitions used throughout:

- *Time zone*: every hour, day and month is in **UTC** (the session time zone
  is checked: `spark_session` sets it). Tables that bucket by time carry a
  ``time_zone`` column saying so.
- *Revenue*: the sum of ``price`` over purchase events (one purchase row = one
  unit, as in the OpenCDP files).
- *Funnel*: per level (``users`` or ``sessions``), how many entities have at
  least one view / cart / purchase; rates are stage over previous stage
  (``cart_rate = carted / viewed``, ``purchase_rate = purchased / carted``) and
  ``conversion = purchased / viewed``. The stages are counted independently
  (a purchase without a cart row still counts as purchased).
- *Cart conversion / abandonment*: a *cart* is one distinct (session, product)
  pair with a cart event; it *converts* when the same session also holds a
  purchase of that product. ``abandonment_rate = 1 - conversion_rate``. Groups
  with fewer than ``min_support`` carts are left out, so tiny groups never top
  the list; events without a category code (or brand) are not grouped.
- *Session length*: seconds from the session's first to its last event (0 for
  a one-event session); events without a session id are not counted.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from producer.events import EventType

#: The columns that identify a repeated row: the real October file repeats some
#: cart rows many times within the same second with every one of these equal.
DEDUP_KEYS: tuple[str, ...] = ("event_time", "event_type", "product_id", "user_id", "user_session", "price")

#: Order of event types inside the same second (a cart before the purchase it leads to).
TYPE_ORDER: dict[str, int] = {
    EventType.VIEW.value: 0,
    EventType.CART.value: 1,
    EventType.REMOVE_FROM_CART.value: 2,
    EventType.PURCHASE.value: 3,
}

TIME_ZONE = "UTC"

VIEW, CART, PURCHASE = EventType.VIEW.value, EventType.CART.value, EventType.PURCHASE.value


def _require_utc(df: DataFrame) -> None:
    zone = df.sparkSession.conf.get("spark.sql.session.timeZone")
    if zone not in ("UTC", "Etc/UTC", "GMT", "Z"):
        raise ValueError(f"analytics buckets time in UTC; the Spark session time zone is {zone!r}")


def _is(kind: str) -> Column:
    return F.col("event_type") == F.lit(kind)


def _ratio(num: Column, den: Column) -> Column:
    """num / den as a double, null when den is 0 (never a division error, never a fake 0)."""
    return F.when(den > 0, num.cast("double") / den.cast("double"))


def type_rank(column: str = "event_type") -> Column:
    """An int that orders event types inside the same second (unknown types last)."""
    expr = F.lit(len(TYPE_ORDER))
    for name, rank in sorted(TYPE_ORDER.items(), key=lambda kv: -kv[1]):
        expr = F.when(F.col(column) == name, F.lit(rank)).otherwise(expr)
    return expr


# --------------------------------------------------------------------------- #
# Cleaning
# --------------------------------------------------------------------------- #


def dedup_events(events: DataFrame) -> DataFrame:
    """Drop repeated identical rows (same `DEDUP_KEYS`); one of each is kept."""
    return events.dropDuplicates(list(DEDUP_KEYS))


def event_counts(events: DataFrame) -> DataFrame:
    """event_type, events, share (of all events)."""
    counts = events.groupBy("event_type").agg(F.count(F.lit(1)).alias("events"))
    total = F.sum("events").over(Window.partitionBy())
    return counts.withColumn("share", F.col("events") / total).orderBy(F.desc("events"), "event_type")


# --------------------------------------------------------------------------- #
# Funnel
# --------------------------------------------------------------------------- #


def _funnel_at(events: DataFrame, key: str, level: str) -> DataFrame:
    per_entity = (
        events.where(F.col(key).isNotNull())
        .groupBy(key)
        .agg(
            F.max(_is(VIEW).cast("int")).alias("v"),
            F.max(_is(CART).cast("int")).alias("c"),
            F.max(_is(PURCHASE).cast("int")).alias("p"),
        )
    )
    totals = per_entity.agg(
        F.count(F.lit(1)).alias("entities"),
        F.coalesce(F.sum("v"), F.lit(0)).cast("long").alias("viewed"),
        F.coalesce(F.sum("c"), F.lit(0)).cast("long").alias("carted"),
        F.coalesce(F.sum("p"), F.lit(0)).cast("long").alias("purchased"),
    )
    return totals.select(
        F.lit(level).alias("level"),
        "entities",
        "viewed",
        "carted",
        "purchased",
        _ratio(F.col("carted"), F.col("viewed")).alias("cart_rate"),
        _ratio(F.col("purchased"), F.col("carted")).alias("purchase_rate"),
        _ratio(F.col("purchased"), F.col("viewed")).alias("conversion"),
    )


def funnel(events: DataFrame) -> DataFrame:
    """view -> cart -> purchase by users and by sessions (two rows: level users, sessions)."""
    return _funnel_at(events, "user_id", "users").unionByName(_funnel_at(events, "user_session", "sessions"))


# --------------------------------------------------------------------------- #
# Carts, categories, brands
# --------------------------------------------------------------------------- #


def _carts(events: DataFrame) -> DataFrame:
    """One row per distinct (session, product) cart, with its group columns and `converted`."""
    carts = (
        events.where(_is(CART) & F.col("user_session").isNotNull())
        .groupBy("user_session", "product_id")
        .agg(F.first("category_code", ignorenulls=True).alias("category_code"), F.first("brand", ignorenulls=True).alias("brand"))
    )
    bought = (
        events.where(_is(PURCHASE) & F.col("user_session").isNotNull())
        .select("user_session", "product_id")
        .distinct()
        .withColumn("converted", F.lit(1))
    )
    return carts.join(bought, ["user_session", "product_id"], "left").fillna({"converted": 0})


def cart_conversion(events: DataFrame, by: str, min_support: int = 50) -> DataFrame:
    """Per `by` ("category_code" or "brand"): carts, converted, conversion_rate, abandonment_rate.

    Only groups with at least `min_support` carts; most carts first.
    """
    if by not in ("category_code", "brand"):
        raise ValueError("cart_conversion groups by category_code or brand")
    grouped = (
        _carts(events)
        .where(F.col(by).isNotNull())
        .groupBy(by)
        .agg(F.count(F.lit(1)).alias("carts"), F.sum("converted").cast("long").alias("converted"))
        .where(F.col("carts") >= F.lit(min_support))
    )
    rate = _ratio(F.col("converted"), F.col("carts"))
    return (
        grouped.withColumn("conversion_rate", rate)
        .withColumn("abandonment_rate", F.lit(1.0) - F.col("conversion_rate"))
        .orderBy(F.desc("carts"), by)
    )


def _purchases(events: DataFrame) -> DataFrame:
    return events.where(_is(PURCHASE))


def categories(events: DataFrame) -> DataFrame:
    """Per category_code: purchases, revenue, buyers, rank_by_purchases, rank_by_revenue (1 = best)."""
    per = (
        _purchases(events)
        .where(F.col("category_code").isNotNull())
        .groupBy("category_code")
        .agg(
            F.count(F.lit(1)).alias("purchases"),
            F.round(F.sum("price"), 2).alias("revenue"),
            F.countDistinct("user_id").alias("buyers"),
        )
    )
    by_purchases = Window.orderBy(F.desc("purchases"), F.desc("revenue"), "category_code")
    by_revenue = Window.orderBy(F.desc("revenue"), F.desc("purchases"), "category_code")
    return (
        per.withColumn("rank_by_purchases", F.row_number().over(by_purchases))
        .withColumn("rank_by_revenue", F.row_number().over(by_revenue))
        .orderBy("rank_by_revenue")
    )


def top_brands_by_category(events: DataFrame, k: int = 5) -> DataFrame:
    """The `k` best brands (by revenue, then purchases) within each category: category_code, rank, brand, purchases, revenue."""
    per = (
        _purchases(events)
        .where(F.col("category_code").isNotNull() & F.col("brand").isNotNull())
        .groupBy("category_code", "brand")
        .agg(F.count(F.lit(1)).alias("purchases"), F.round(F.sum("price"), 2).alias("revenue"))
    )
    window = Window.partitionBy("category_code").orderBy(F.desc("revenue"), F.desc("purchases"), "brand")
    return (
        per.withColumn("rank", F.row_number().over(window))
        .where(F.col("rank") <= k)
        .select("category_code", "rank", "brand", "purchases", "revenue")
        .orderBy("category_code", "rank")
    )


# --------------------------------------------------------------------------- #
# Time
# --------------------------------------------------------------------------- #


def _by_time_bucket(events: DataFrame, bucket: Column, name: str) -> DataFrame:
    _require_utc(events)
    per = (
        _purchases(events)
        .groupBy(bucket.alias(name))
        .agg(F.count(F.lit(1)).alias("purchases"), F.round(F.sum("price"), 2).alias("revenue"))
    )
    total = F.sum("purchases").over(Window.partitionBy())
    return per.withColumn("share", F.col("purchases") / total).withColumn("time_zone", F.lit(TIME_ZONE)).orderBy(name)


def purchases_by_hour(events: DataFrame) -> DataFrame:
    """"Prime time": hour (0-23, UTC), purchases, revenue, share of purchases, time_zone."""
    return _by_time_bucket(events, F.hour("event_time"), "hour")


def purchases_by_day_of_month(events: DataFrame) -> DataFrame:
    """day (1-31, UTC), purchases, revenue, share of purchases, time_zone."""
    return _by_time_bucket(events, F.dayofmonth("event_time"), "day")


def _revenue_trend(events: DataFrame, bucket: Column, name: str) -> DataFrame:
    _require_utc(events)
    return (
        _purchases(events)
        .groupBy(bucket.alias(name))
        .agg(
            F.count(F.lit(1)).alias("purchases"),
            F.round(F.sum("price"), 2).alias("revenue"),
            F.countDistinct("user_id").alias("buyers"),
        )
        .withColumn("time_zone", F.lit(TIME_ZONE))
        .orderBy(name)
    )


def revenue_daily(events: DataFrame) -> DataFrame:
    """date (YYYY-MM-DD, UTC), purchases, revenue, buyers, time_zone."""
    return _revenue_trend(events, F.date_format("event_time", "yyyy-MM-dd"), "date")


def revenue_monthly(events: DataFrame) -> DataFrame:
    """month (YYYY-MM, UTC), purchases, revenue, buyers, time_zone."""
    return _revenue_trend(events, F.date_format("event_time", "yyyy-MM"), "month")


# --------------------------------------------------------------------------- #
# Customers and sessions
# --------------------------------------------------------------------------- #


def top_customers(events: DataFrame, k: int = 100) -> DataFrame:
    """The `k` biggest spenders: rank, user_id, purchases, spend, sessions (with a purchase)."""
    per = (
        _purchases(events)
        .groupBy("user_id")
        .agg(
            F.count(F.lit(1)).alias("purchases"),
            F.round(F.sum("price"), 2).alias("spend"),
            F.countDistinct("user_session").alias("sessions"),
        )
    )
    window = Window.orderBy(F.desc("spend"), F.desc("purchases"), "user_id")
    return (
        per.withColumn("rank", F.row_number().over(window))
        .where(F.col("rank") <= k)
        .select("rank", "user_id", "purchases", "spend", "sessions")
        .orderBy("rank")
    )


def session_stats(events: DataFrame) -> DataFrame:
    """One row: sessions, mean_length_s, median_length_s, mean_events, mean_events_with_purchase."""
    per = (
        events.where(F.col("user_session").isNotNull())
        .groupBy("user_session")
        .agg(
            (F.max("event_time").cast("double") - F.min("event_time").cast("double")).alias("length_s"),
            F.count(F.lit(1)).alias("events"),
            F.max(_is(PURCHASE).cast("int")).alias("purchased"),
        )
    )
    return per.agg(
        F.count(F.lit(1)).alias("sessions"),
        F.avg("length_s").alias("mean_length_s"),
        F.percentile_approx("length_s", 0.5, 10_000).cast("double").alias("median_length_s"),
        F.avg("events").alias("mean_events"),
        F.avg(F.when(F.col("purchased") == 1, F.col("events"))).alias("mean_events_with_purchase"),
    )


def session_journey(events: DataFrame, session_id: str) -> DataFrame:
    """One session's events in order: step (1..), event_time, seconds_since_start, event_type, product, category, brand, price."""
    one = events.where(F.col("user_session") == F.lit(session_id))
    order = Window.orderBy("event_time", type_rank(), "product_id")
    start = F.min("event_time").over(Window.partitionBy())
    return (
        one.withColumn("step", F.row_number().over(order))
        .withColumn("seconds_since_start", F.col("event_time").cast("double") - start.cast("double"))
        .select(
            "step", "event_time", "seconds_since_start", "event_type", "product_id",
            "category_code", "brand", "price", "user_id",
        )  # fmt: skip
        .orderBy("step")
    )
