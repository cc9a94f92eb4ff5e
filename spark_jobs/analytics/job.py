"""The analytics batch job: events -> dedup -> KPI tables -> a new "analytics" artifact version.

Thin wiring around `spark_jobs.analytics.kpis`; see `spark_jobs.analytics` for
the artifact layout.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feature_store.artifacts import open_artifacts
from feature_store.lake import load_events
from feature_store.settings import Settings
from spark_jobs.analytics import kpis

log = logging.getLogger(__name__)

ARTIFACT_KIND = "analytics"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class AnalyticsOptions:
    min_support: int = 50  #: minimum carts for a category / brand in the cart-conversion tables
    top_brands: int = 5  #: brands kept per category
    top_customers: int = 100


#: Artifact file name (without .parquet) -> KPI function. Names are stable: the API serves them.
def kpi_functions(options: AnalyticsOptions) -> dict[str, Callable[[DataFrame], DataFrame]]:
    return {
        "funnel": kpis.funnel,
        "event_counts": kpis.event_counts,
        "cart_conversion_by_category": lambda df: kpis.cart_conversion(df, "category_code", options.min_support),
        "cart_conversion_by_brand": lambda df: kpis.cart_conversion(df, "brand", options.min_support),
        "categories": kpis.categories,
        "top_brands_by_category": lambda df: kpis.top_brands_by_category(df, options.top_brands),
        "purchases_by_hour": kpis.purchases_by_hour,
        "purchases_by_day_of_month": kpis.purchases_by_day_of_month,
        "revenue_daily": kpis.revenue_daily,
        "revenue_monthly": kpis.revenue_monthly,
        "top_customers": lambda df: kpis.top_customers(df, options.top_customers),
        "session_stats": kpis.session_stats,
    }


@dataclass
class AnalyticsResult:
    tables: dict[str, pa.Table]
    manifest: dict[str, Any]
    version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def events_frame(spark: SparkSession, table: pa.Table, workdir: Path) -> DataFrame:
    """An Arrow event table as a Spark DataFrame, through a Parquet file (fast, and memory-bounded in the JVM)."""
    path = workdir / "events.parquet"
    pq.write_table(table, path, row_group_size=1_000_000)
    return spark.read.parquet(str(path))


def compute(events: DataFrame, options: AnalyticsOptions = AnalyticsOptions()) -> AnalyticsResult:
    """Dedup `events`, compute every KPI and collect them as Arrow tables (with the manifest's figures)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    rows_before = events.count()
    clean = kpis.dedup_events(events).cache()
    rows_after = clean.count()
    iso = "yyyy-MM-dd'T'HH:mm:ssXXX"  # in the session time zone, UTC (checked by the KPIs)
    span = clean.agg(
        F.date_format(F.min("event_time"), iso).alias("first"), F.date_format(F.max("event_time"), iso).alias("last")
    ).first()
    timings["dedup_s"] = time.perf_counter() - started
    log.info("events: %d rows, %d after removing repeated rows", rows_before, rows_after)
    tables: dict[str, pa.Table] = {}
    for name, function in kpi_functions(options).items():
        t0 = time.perf_counter()
        tables[name] = function(clean).toArrow()
        timings[f"{name}_s"] = time.perf_counter() - t0
        log.info("kpi %s: %d rows in %.2f s", name, tables[name].num_rows, timings[f"{name}_s"])
    clean.unpersist()
    manifest = {
        "kind": ARTIFACT_KIND,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "time_zone": kpis.TIME_ZONE,
        "data_range": {
            "first_event": span["first"] if span else None,
            "last_event": span["last"] if span else None,
        },
        "rows_before_dedup": rows_before,
        "rows_after_dedup": rows_after,
        "duplicates_removed": rows_before - rows_after,
        "dedup_keys": list(kpis.DEDUP_KEYS),
        "options": {"min_support": options.min_support, "top_brands": options.top_brands, "top_customers": options.top_customers},
        "tables": {f"{name}.parquet": table.num_rows for name, table in tables.items()},
    }
    return AnalyticsResult(tables=tables, manifest=manifest, timings=timings)


def publish(result: AnalyticsResult, settings: Settings) -> str:
    """Write one Parquet per KPI plus manifest.json as a new "analytics" version; returns the version."""
    with open_artifacts(settings).new_version(ARTIFACT_KIND) as version:
        for name, table in result.tables.items():
            version.put_table(f"{name}.parquet", table)
        version.put_json(MANIFEST, {**result.manifest, "version": version.version, "timings_s": result.timings})
    result.version = version.version
    return version.version


def run(
    spark: SparkSession, settings: Settings, *, from_csv: Path | None = None, options: AnalyticsOptions = AnalyticsOptions()
) -> AnalyticsResult:
    """Load the events (CSV or lake), compute the KPIs and publish them."""
    started = time.perf_counter()
    table = load_events(settings, from_csv=from_csv)
    load_s = time.perf_counter() - started
    log.info("loaded %d events in %.1f s", table.num_rows, load_s)
    with tempfile.TemporaryDirectory(prefix="clickrec-analytics-") as tmp:
        events = events_frame(spark, table, Path(tmp))
        del table
        result = compute(events, options)
    result.timings = {"load_s": load_s, **result.timings}
    result.timings["total_s"] = time.perf_counter() - started
    result.manifest["source"] = str(from_csv) if from_csv else settings.lake_url
    publish(result, settings)
    return result


def journey(spark: SparkSession, settings: Settings, session_id: str, *, from_csv: Path | None = None) -> pa.Table:
    """The events of one session, in order (deduplicated)."""
    table = load_events(settings, from_csv=from_csv)
    with tempfile.TemporaryDirectory(prefix="clickrec-journey-") as tmp:
        events = events_frame(spark, table, Path(tmp))
        return kpis.session_journey(kpis.dedup_events(events), session_id).toArrow()


def summary_lines(result: AnalyticsResult, top: int = 5) -> list[str]:
    """A short readable summary: dedup, funnel, top categories."""
    m = result.manifest
    lines = [
        f"events {m['rows_before_dedup']:,} -> {m['rows_after_dedup']:,} after removing {m['duplicates_removed']:,} repeated rows"
        f" ({m['data_range']['first_event']} .. {m['data_range']['last_event']}, {m['time_zone']})",
        "funnel        entities     viewed     carted  purchased  cart%  buy|cart%  conv%",
    ]
    for row in result.tables["funnel"].to_pylist():
        def pct(x: float | None) -> str:
            return "   -" if x is None else f"{100 * x:5.2f}"

        lines.append(
            f"  {row['level']:<10} {row['entities']:>10,} {row['viewed']:>10,} {row['carted']:>10,} {row['purchased']:>10,}"
            f"  {pct(row['cart_rate'])}  {pct(row['purchase_rate']):>9}  {pct(row['conversion'])}"
        )
    cats = result.tables["categories"].to_pylist()[:top]
    if cats:
        lines.append(f"top {len(cats)} categories by revenue:")
        for row in cats:
            lines.append(f"  {row['rank_by_revenue']}. {row['category_code']:<40} {row['revenue']:>12,.2f}  ({row['purchases']:,} purchases)")
    hours = sorted(result.tables["purchases_by_hour"].to_pylist(), key=lambda r: -r["purchases"])[:3]
    if hours:
        lines.append("prime time (UTC): " + ", ".join(f"{r['hour']:02d}h ({r['purchases']:,})" for r in hours))
    if result.version:
        lines.append(f"artifact analytics/{result.version}: {len(result.tables)} tables + {MANIFEST}")
    return lines
