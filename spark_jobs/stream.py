"""`clickrec stream`: Spark Structured Streaming from Kafka into Redis (and the lake).

Two queries over the same topic, each with its own checkpoint under CHECKPOINT_DIR:

- ``windows``: parse -> watermark -> drop repeated event ids -> the sliding
  two-minute user and product windows in ONE stateful aggregation (update mode)
  -> HSET of each updated window's full totals (idempotent) and bot flags;
- ``events``: parse -> watermark -> drop repeated event ids -> per micro-batch:
  append to the lake (Parquet by date, files named by batch id: idempotent),
  merge session and hourly / daily product partials into Redis (Lua scripts that
  skip a batch applied before), record freshness.

Both log every batch id with its rows, duration and lag, and store them in Redis
(`fs:v1:stream:<query>`) where the API's metrics read them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feature_store.definitions import (
    BOT_RULE,
    PRODUCT_1D,
    PRODUCT_1H,
    PRODUCT_2M,
    SESSION_FEATURES,
    USER_2M,
    FeatureGroup,
)
from feature_store.lake import Lake
from feature_store.online import OnlineStore
from feature_store.settings import Settings
from spark_jobs.features import multi_window_features, parse_events, partial_features, split_groups
from spark_jobs.kafka_source import KafkaSource
from spark_jobs.session import spark_session

log = logging.getLogger(__name__)

WINDOW_GROUPS = (USER_2M, PRODUCT_2M)
MERGED_GROUPS = (PRODUCT_1H, PRODUCT_1D)


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    trigger_seconds: float = 1.0
    watermark: str = "1 minute"
    max_rows_per_batch: int = 500_000


def read_events(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """Typed, watermarked, deduplicated click events from the clicks topic."""
    spark.dataSource.register(KafkaSource)
    records = (
        spark.readStream.format("clickrec_kafka")
        .option("bootstrap", settings.kafka_bootstrap)
        .option("topic", settings.clicks_topic)
        .option("maxRowsPerBatch", str(options.max_rows_per_batch))
        .load()
    )
    events = parse_events(records).withWatermark("event_time", options.watermark)
    return events.dropDuplicatesWithinWatermark(["event_id"])


def _writer_id(checkpoint: Path) -> str:
    """The streaming query id stored in its checkpoint: stable across restarts, new for a new checkpoint."""
    metadata = checkpoint / "metadata"
    try:
        return json.loads(metadata.read_text())["id"]
    except (OSError, ValueError, KeyError):
        return f"checkpoint:{checkpoint}"


def _record(store: OnlineStore, query: str, batch_id: int, rows: int, started: float, oldest_ingest: float | None) -> None:
    now = time.time()
    stats = {
        "batch_id": batch_id,
        "input_rows": rows,
        "duration_s": round(now - started, 3),
        "lag_s": round(now - oldest_ingest, 3) if oldest_ingest else "",
        "written_at": round(now, 3),
    }
    store.record_batch(query, stats)
    log.info("%s batch %d: %d rows in %.2f s, lag %s s", query, batch_id, rows, stats["duration_s"], stats["lag_s"])


def horizon(settings: Settings, group: FeatureGroup) -> float:
    """Epoch time before which the stream no longer writes `group` to Redis.

    A window, session or bucket that ended more than its TTL ago would never be
    read (the API reads the current ones) and expires at once: catching up on
    history, skipping them saves most Redis writes. ONLINE_BACKFILL_SECONDS
    widens it (tests do, to compare every window with the batch recomputation).
    """
    reach = settings.online_backfill_seconds or group.ttl.total_seconds()
    return time.time() - reach


def _rows(frame: DataFrame) -> list[dict]:
    """A small Spark result as plain dicts (through Arrow: much faster than Row objects)."""
    return frame.toArrow().to_pylist()


def window_sink(settings: Settings) -> Callable[[DataFrame, int], None]:
    """foreachBatch of the ``windows`` query: HSET the updated windows, flag bots."""
    store = OnlineStore.from_url(settings.redis_url)

    def write(batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        batch.persist()
        try:
            rows = 0
            for name, frame in split_groups(batch, WINDOW_GROUPS).items():
                group = USER_2M if name == USER_2M.name else PRODUCT_2M
                recent = frame.where(F.col("window_end") >= F.lit(horizon(settings, group)).cast("timestamp"))
                records = _rows(recent)
                rows += store.write_windows(group, records)
                if group is USER_2M:
                    bots = [r["entity_id"] for r in records if (r["events"] or 0) > BOT_RULE.max_events]
                    if bots:
                        store.flag_bots(bots)
                        log.warning("flagged %d users as bots (over %d events in two minutes)", len(bots), BOT_RULE.max_events)
            newest = batch.agg(F.max("_last_ingest")).first()[0] if rows else None
            _record(store, "windows", batch_id, rows, started, newest.timestamp() if newest else None)
        finally:
            batch.unpersist()

    return write


def event_sink(settings: Settings, checkpoint: Path) -> Callable[[DataFrame, int], None]:
    """foreachBatch of the ``events`` query: the lake, sessions, hourly and daily counters."""
    store = OnlineStore.from_url(settings.redis_url)
    lake = Lake(settings.lake_url, settings)

    def write(batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        writer = _writer_id(checkpoint)
        batch.persist()
        try:
            table = batch.drop("ingest_time").toArrow()
            lake.write_batch(table, batch_id)
            sessions = partial_features(batch, SESSION_FEATURES)
            cutoff = horizon(settings, SESSION_FEATURES)
            store.merge_sessions(_rows(sessions.where(F.col("last_event_time") >= cutoff)), writer, batch_id)
            for group in MERGED_GROUPS:
                buckets = partial_features(batch, group)
                ends = F.col("window_start") + group.length.total_seconds()
                store.merge_counts(group, _rows(buckets.where(ends >= horizon(settings, group))), writer, batch_id)
            oldest = batch.agg(F.min("ingest_time")).first()[0] if table.num_rows else None
            _record(store, "events", batch_id, table.num_rows, started, oldest.timestamp() if oldest else None)
        finally:
            batch.unpersist()

    return write


def start(spark: SparkSession, settings: Settings, options: StreamOptions = StreamOptions()) -> list:
    """Start both queries; returns them (StreamingQuery objects)."""
    checkpoints = Path(settings.checkpoint_dir)
    events = read_events(spark, settings, options)
    windows = multi_window_features(events, WINDOW_GROUPS)
    trigger = {"processingTime": f"{options.trigger_seconds} seconds"}
    window_query = (
        windows.writeStream.queryName("windows")
        .outputMode("update")
        .option("checkpointLocation", str(checkpoints / "windows"))
        .trigger(**trigger)
        .foreachBatch(window_sink(settings))
        .start()
    )
    event_query = (
        read_events(spark, settings, options)
        .writeStream.queryName("events")
        .option("checkpointLocation", str(checkpoints / "events"))
        .trigger(**trigger)
        .foreachBatch(event_sink(settings, checkpoints / "events"))
        .start()
    )
    return [window_query, event_query]


def run_to_end(queries: list) -> None:
    """Process everything the topic holds now, then stop the queries (tests and benchmarks)."""
    try:
        for query in queries:
            query.processAllAvailable()
    finally:
        for query in queries:
            query.stop()


def run(settings: Settings, options: StreamOptions = StreamOptions()) -> None:
    """`clickrec stream`: run until interrupted (or until a query fails, which is raised)."""
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per Spark callback otherwise
    spark = spark_session("clickrec-stream", settings)
    spark.sparkContext.setLogLevel("WARN")
    queries = start(spark, settings, options)
    log.info("streaming from %s topic %s; checkpoints in %s", settings.kafka_bootstrap, settings.clicks_topic, settings.checkpoint_dir)
    store = OnlineStore.from_url(settings.redis_url)
    stop = threading.Event()
    try:
        while not stop.wait(1.0):
            store.beat("stream")
            for query in queries:
                if not query.isActive:
                    error = query.exception()
                    raise RuntimeError(f"streaming query {query.name} stopped: {error}")
    except KeyboardInterrupt:
        log.info("stopping the streaming queries")
    finally:
        for query in queries:
            query.stop()
