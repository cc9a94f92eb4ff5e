"""Window features as pure DataFrame functions, built from `feature_store.definitions`.

The same functions run on the stream (spark_jobs.stream) and in batch over the
lake (`batch_features`), so a value in Redis equals what a batch recomputation
gives for the same events: a test holds them to it.

- `window_features(events, group)`: one row per entity and window with the
  group's features (sliding and tumbling groups: per window; sessions: per session).
- `partial_features(events, group)`: mergeable partial aggregates of one
  micro-batch for the groups the stream merges into Redis (sessions, tumbling
  counters), see feature_store.online.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from feature_store.definitions import (
    ACTIVITY_WEIGHTS,
    HEALTH_GLOBAL_RATE,
    HEALTH_PRIOR_VIEWS,
    Agg,
    Feature,
    FeatureGroup,
    Window,
)


def _order() -> Column:
    """Events ordered by time, ties broken by event id: "latest" means the same thing everywhere."""
    return F.struct(F.col("event_time"), F.col("event_id"))


def _when_types(feature: Feature, value: Column, only: Column | None = None) -> Column:
    condition = only
    if feature.event_types:
        of_type = F.col("event_type").isin([t.value for t in feature.event_types])
        condition = of_type if condition is None else condition & of_type
    return value if condition is None else F.when(condition, value)


def _activity_weight() -> Column:
    expr = None
    for event_type, weight in ACTIVITY_WEIGHTS.items():
        expr = (F.when if expr is None else expr.when)(F.col("event_type") == event_type.value, F.lit(weight))
    return expr.otherwise(F.lit(0.0))


def _aggregate(feature: Feature, only: Column | None = None) -> Column | None:
    """The final aggregate of a feature over a window's events (None for DERIVED).

    `only` restricts it to the rows where that condition holds (see multi_window_features).
    """

    def pick(value: Column, with_types: bool = True) -> Column:
        if with_types:
            return _when_types(feature, value, only)
        return value if only is None else F.when(only, value)

    match feature.agg:
        case Agg.COUNT:
            return F.count(pick(F.lit(1)))
        case Agg.COUNT_DISTINCT:
            return F.size(F.collect_set(pick(F.col(feature.column))))
        case Agg.MEAN:
            return F.avg(pick(F.col(feature.column)))
        case Agg.MAX:
            return F.max(pick(F.col(feature.column)))
        case Agg.WEIGHTED_COUNT:
            return F.sum(pick(_activity_weight(), with_types=False))
        case Agg.FIRST_TIME:
            return F.min(pick(F.col("event_time"), with_types=False))
        case Agg.LAST_TIME:
            return F.max(pick(F.col("event_time"), with_types=False))
        case Agg.LAST_VALUE:
            return F.max_by(F.col(feature.column), pick(_order(), with_types=False))
        case Agg.LAST_N:
            ordered = F.array_sort(F.collect_list(F.struct(_order().alias("o"), F.col(feature.column).alias("v"))))
            values = F.transform(ordered, lambda item: item["v"])
            return F.slice(values, F.greatest(F.size(values) - feature.n + 1, F.lit(1)), feature.n)
        case Agg.DERIVED:
            return None
    raise ValueError(f"unknown aggregation {feature.agg}")


def _derived(feature: Feature) -> Column:
    match feature.formula:
        case "health":
            prior = F.lit(HEALTH_PRIOR_VIEWS)
            return (F.col("carts") + F.col("purchases") + prior * F.lit(HEALTH_GLOBAL_RATE)) / (F.col("views") + prior)
        case "duration":
            return F.col("last_event_time").cast("double") - F.col("first_event_time").cast("double")
        case "has_cart":
            return (F.col("carts") > 0).cast("long")
    raise ValueError(f"{feature.name}: unknown formula {feature.formula!r}")


def window_column(group: FeatureGroup) -> Column:
    """Spark's window struct (start, end) for a sliding or tumbling group."""
    seconds = int(group.length.total_seconds())
    if group.window is Window.SLIDING:
        return F.window("event_time", f"{seconds} seconds", f"{int(group.slide.total_seconds())} seconds")
    return F.window("event_time", f"{seconds} seconds")


def grouping(group: FeatureGroup) -> list[Column]:
    key = F.col(group.entity.join_key).alias("entity_id")
    if group.window is Window.SESSION:
        return [key]
    return [key, window_column(group).alias("window")]


def finish(aggregated: DataFrame, group: FeatureGroup) -> DataFrame:
    """Add the derived features and put the columns in the declared order."""
    for feature in group.features:
        if feature.agg is Agg.DERIVED:
            aggregated = aggregated.withColumn(feature.name, _derived(feature))
    keys = ["entity_id"] + ([] if group.window is Window.SESSION else ["window_start", "window_end"])
    if group.window is not Window.SESSION:
        aggregated = aggregated.withColumn("window_start", F.col("window.start")).withColumn(
            "window_end", F.col("window.end")
        )
    return aggregated.select(*keys, *group.names)


def window_features(events: DataFrame, group: FeatureGroup) -> DataFrame:
    """One row per entity (and window) with every feature of `group`, from typed events."""
    if group.window is Window.SESSION:
        events = events.where(F.col("user_session").isNotNull())
        aggs = [_aggregate(f).alias(f.name) for f in group.features if f.agg is not Agg.DERIVED]
        return finish(events.groupBy(*grouping(group)).agg(*aggs), group)
    return split_groups(multi_window_features(events, [group]), [group])[group.name]


def _same_geometry(groups: Sequence[FeatureGroup]) -> None:
    shapes = {(g.window, g.length, g.slide) for g in groups}
    if len(shapes) != 1 or groups[0].window is Window.SESSION:
        raise ValueError("multi_window_features takes windowed groups that share one window shape")


def multi_window_features(events: DataFrame, groups: Sequence[FeatureGroup]) -> DataFrame:
    """Several windowed groups with one window shape in ONE aggregation (one stateful operator).

    Each event is exploded into one row per group (keyed by that group's entity);
    every aggregate only sees its own group's rows. The streaming job uses this so
    that one query, reading Kafka once, maintains the user and product windows.
    Split the result with `split_groups`.
    """
    _same_geometry(groups)
    keyed = events.withColumn(
        "_keyed",
        F.explode(
            F.array(*[
                F.struct(F.lit(g.name).alias("group"), F.col(g.entity.join_key).cast("string").alias("entity_id"))
                for g in groups
            ])
        ),
    ).select("*", "_keyed.group", "_keyed.entity_id")
    rows = keyed.groupBy(F.col("group"), F.col("entity_id"), window_column(groups[0]).alias("window"))
    extra = [F.max("ingest_time").alias("_last_ingest")] if "ingest_time" in events.columns else []
    return rows.agg(*_masked_aggs(groups), *extra)


def _masked_aggs(groups: Sequence[FeatureGroup]) -> list[Column]:
    columns = []
    for g in groups:
        for feature in g.features:
            if feature.agg is not Agg.DERIVED:
                columns.append(_aggregate(feature, only=F.col("group") == g.name).alias(f"{g.name}__{feature.name}"))
    return columns


def split_groups(rows: DataFrame, groups: Sequence[FeatureGroup]) -> dict[str, DataFrame]:
    """`multi_window_features` rows -> one DataFrame per group, as `window_features` returns."""
    result = {}
    for g in groups:
        own = [F.col(f"{g.name}__{f.name}").alias(f.name) for f in g.features if f.agg is not Agg.DERIVED]
        selected = rows.where(F.col("group") == g.name).select("entity_id", "window", *own)
        result[g.name] = finish(selected, g)
    return result


def dedupe(events: DataFrame) -> DataFrame:
    """One row per event id (a replayed row, or a live event posted twice, counts once)."""
    return events.dropDuplicates(["event_id"])


def batch_features(events: DataFrame, group: FeatureGroup) -> DataFrame:
    """The offline recomputation: deduplicated events -> the group's feature rows."""
    return window_features(dedupe(events), group)


def batch_session_events(events: DataFrame, keep: int) -> DataFrame:
    """The offline recomputation of each session's latest `keep` raw events (what
    `OnlineStore.session_events` returns): deduplicated, with their rank, 1 = the latest."""
    from pyspark.sql import Window as W

    latest_first = W.partitionBy("user_session").orderBy(F.col("event_time").desc(), F.col("event_id").desc())
    ranked = dedupe(events).where(F.col("user_session").isNotNull()).withColumn("rank", F.row_number().over(latest_first))
    return ranked.where(F.col("rank") <= keep)


# --- partial aggregates, merged into Redis by the stream ---------------------------


def _partial(feature: Feature) -> list[Column]:
    """Mergeable partials of a feature over one micro-batch (see feature_store.online)."""
    name = feature.name
    match feature.agg:
        case Agg.COUNT:
            return [F.count(_when_types(feature, F.lit(1))).alias(name)]
        case Agg.COUNT_DISTINCT:
            return [F.collect_set(_when_types(feature, F.col(feature.column)).cast("string")).alias(name)]
        case Agg.FIRST_TIME:
            return [F.min("event_time").cast("double").alias(name)]
        case Agg.LAST_TIME:
            return [F.max("event_time").cast("double").alias(name)]
        case Agg.LAST_VALUE:
            latest = F.max_by(F.struct(F.col("event_time").cast("double").alias("t"), F.col("event_id").alias("i"),
                                       F.col(feature.column).cast("string").alias("v")), _order())  # fmt: skip
            return [latest.alias(name)]
        case Agg.LAST_N:
            items = F.collect_list(
                F.struct(F.col("event_time").cast("double").alias("t"), F.col("event_id").alias("i"),
                         F.col(feature.column).cast("string").alias("v"))  # fmt: skip
            )
            return [items.alias(name)]
        case Agg.DERIVED:
            return []
    raise ValueError(f"{feature.name}: {feature.agg} has no mergeable partial; use a sliding group")


def partial_features(events: DataFrame, group: FeatureGroup) -> DataFrame:
    """Per entity (and bucket) partial aggregates of one micro-batch's events."""
    if group.window is Window.SESSION:
        events = events.where(F.col("user_session").isNotNull())
    columns = [c for f in group.features for c in _partial(f)]
    rows = events.groupBy(*grouping(group)).agg(*columns)
    if group.window is not Window.SESSION:
        rows = rows.withColumn("window_start", F.col("window.start").cast("double")).drop("window")
    return rows
