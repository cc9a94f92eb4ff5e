"""`clickrec stream`: Spark Structured Streaming from Kafka into Redis (and the lake).

One query reads the clicks topic once (checkpoint CHECKPOINT_DIR/stream); its
`foreachBatch` collects each micro-batch's records to the driver as Arrow and:

1. parses the JSON values with the schema derived from the event model
   (`producer.schema.decode_wire`: Arrow's parser, 4x faster here than Spark's
   `from_json` and no JIT warm-up); a value that is not a click event goes to the
   dead-letter topic with the reason and its topic, partition and offset;
2. drops repeated event ids: within the batch, then those seen in an earlier batch
   (`OnlineStore.first_seen`: ids are remembered in Redis for DEDUP_TTL, with the
   batch that had them, so a batch Spark re-runs keeps its own events);
3. appends the events to the lake (Parquet by date, files named by batch id: idempotent);
4. aggregates the batch with Arrow (`spark_jobs.partials`) and merges the partials
   into Redis with Lua scripts that apply each `<query id>:<batch id>` once per key:
   the two-minute user and product windows (per 20-s pane, merged into every window
   that contains it), the sessions with their latest raw events, the hourly and daily
   product counters; flags bots. While the stream is caught up and its batch is small
   enough, it waits between its merge calls (`batch_pace`: at most STREAM_REDIS_SHARE
   of Redis's time, within STREAM_PACE_FRACTION of the trigger interval, using only the
   slack), so that the API's reads do not queue behind a whole batch.

A query that fails (Redis, the broker or the lake away for longer than their clients
retry) starts again from its checkpoint after a backoff (`supervise`, `RestartPolicy`).

No streaming state: no watermark, no state store. Each batch logs its id, rows,
duration and lag, and records them in Redis for the API's metrics, per stage:
`fs:v1:stream:windows` (the two-minute windows) and `fs:v1:stream:events` (lake,
sessions, counters).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import redis
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
from feature_store.online import OnlineStore, WritePace
from feature_store.settings import Settings
from producer.publisher import Publisher
from producer.schema import decode_wire
from spark_jobs import partials
from spark_jobs.kafka_source import KafkaSource
from spark_jobs.session import spark_session

log = logging.getLogger(__name__)

WINDOW_GROUPS = (USER_2M, PRODUCT_2M)
MERGED_GROUPS = (PRODUCT_1H, PRODUCT_1D)
QUERY = "stream"


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    trigger_seconds: float = 1.0
    max_rows_per_batch: int = 500_000
    max_rows_per_task: int = 100_000  # a batch's Kafka ranges are split into Spark tasks of at most this


def read_records(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """The clicks topic's records: the JSON value, its broker time (`ingest_time`) and position."""
    spark.dataSource.register(KafkaSource)
    return (
        spark.readStream.format("clickrec_kafka")
        .option("bootstrap", settings.kafka_bootstrap)
        .option("topic", settings.clicks_topic)
        .option("maxRowsPerBatch", str(options.max_rows_per_batch))
        .option("maxRowsPerPartition", str(options.max_rows_per_task))
        .load()
        .select("value", F.col("timestamp").alias("ingest_time"), "topic", "partition", "offset")
    )


def parse_records(records: pa.Table, dead_letters: Publisher) -> pa.Table:
    """A micro-batch's records -> typed events plus `ingest_time`; the rest become dead letters."""
    events, index, rejected = decode_wire(records.column("value").combine_chunks())
    if rejected:
        log.warning("%d records are not click events: sent to the dead-letter topic", len(rejected))
        rows = pa.array([row for row, _ in rejected])
        values = records.column("value").take(rows).to_pylist()
        places = records.select(["topic", "partition", "offset"]).take(rows).to_pylist()
        for (_, reason), value, place in zip(rejected, values, places):
            dead_letters.reject(value or "", reason, "{topic}/{partition}@{offset}".format(**place))
        dead_letters.flush()
    return events.append_column("ingest_time", records.column("ingest_time").take(pa.array(index)))


def _writer_id(checkpoint: Path) -> str:
    """The streaming query id stored in its checkpoint: stable across restarts, new for a new checkpoint."""
    metadata = checkpoint / "metadata"
    try:
        return json.loads(metadata.read_text())["id"]
    except (OSError, ValueError, KeyError):
        return f"checkpoint:{checkpoint}"


def _record(store: OnlineStore, stage: str, batch_id: int, rows: int, seconds: float, oldest_ingest: float | None) -> None:
    now = time.time()
    stats = {
        "batch_id": batch_id,
        "input_rows": rows,
        "duration_s": round(seconds, 3),
        "lag_s": round(now - oldest_ingest, 3) if oldest_ingest else "",
        "written_at": round(now, 3),
    }
    store.record_batch(stage, stats)


def horizon(settings: Settings, group: FeatureGroup) -> float:
    """Epoch time before which the stream no longer writes `group` to Redis.

    A window, session or bucket that ended more than its TTL ago would never be
    read (the API reads the current ones) and expires at once: catching up on
    history, skipping them saves most Redis writes. ONLINE_BACKFILL_SECONDS
    widens it (tests do, to compare every window with the batch recomputation).
    """
    reach = settings.online_backfill_seconds or group.ttl.total_seconds()
    return time.time() - reach


@dataclass
class MergeCost:
    """Seconds of Redis merge calls per event, smoothed over the latest batches: how long the next
    batch's calls will take (`WritePace.expected`)."""

    per_event: float | None = None
    weight: float = 0.3  #: of the newest batch

    def expect(self, events: int) -> float | None:
        return None if self.per_event is None else self.per_event * events

    def observe(self, events: int, seconds: float) -> None:
        if events > 0:
            latest = seconds / events
            self.per_event = latest if self.per_event is None else (1 - self.weight) * self.per_event + self.weight * latest


def batch_pace(
    settings: Settings, trigger_seconds: float, lag: float | None, started: float | None = None,
    expected: float | None = None,
) -> WritePace | None:  # fmt: skip
    """How a micro-batch that `started` (perf_counter; default now) shares Redis with the API, or None:
    pacing is off, or the stream has no slack for it.

    Its waits end STREAM_PACE_FRACTION of the trigger interval after it started, so the
    batch still fits in its interval with Spark's own steps around it, and they spread the
    `expected` seconds of merge calls (`MergeCost`) over what is left of that: a batch whose
    calls would not fit does not wait. `lag` is how long the batch's oldest event had waited
    since the broker got it when the batch began (None: unknown, as for events without an
    ingest time). A caught-up stream's lag is about one interval; past one interval plus the
    waiting window, the previous batch ran over its interval, and waiting now would put the
    stream further behind: such a batch writes at full speed. The stream's freshness comes
    before the API's tail.
    """
    fraction = settings.stream_pace_fraction
    if fraction <= 0 or settings.stream_redis_share >= 1:
        return None
    if lag is not None and lag > (1 + fraction) * trigger_seconds:
        return None
    pace = WritePace(share=settings.stream_redis_share, seconds=fraction * trigger_seconds, started=started,
                     expected=expected)  # fmt: skip
    return pace if pace.waits else None


def process_batch(
    table: pa.Table, batch_id: int, *, store: OnlineStore, lake: Lake, writer: str, settings: Settings,
    pace: WritePace | None = None,
) -> dict[str, float]:
    """Everything one micro-batch writes (see the module docstring), its Redis merges paced by `pace`;
    returns seconds per step."""
    clock = time.perf_counter()
    steps: dict[str, float] = {}

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[step] = now - clock
        clock = now

    events = partials.dedupe_batch(table)
    if events.num_rows:
        keep = store.first_seen(events.column("event_id").to_pylist(), writer, batch_id)
        if not all(keep):
            events = events.filter(pa.array(keep))
    lap("dedupe")
    lake.write_batch(partials.lake_rows(events), batch_id)
    lap("lake")
    steps.update(write_online(events, batch_id, store=store, writer=writer, settings=settings, pace=pace))
    return steps


def process_paced_batch(
    table: pa.Table, batch_id: int, *, store: OnlineStore, lake: Lake, writer: str, settings: Settings,
    trigger_seconds: float, lag: float | None, started: float, cost: MergeCost,
) -> tuple[dict[str, float], bool]:  # fmt: skip
    """`process_batch`, paced as `batch_pace` says (its expected calls from `cost`, which then learns from the
    batch's own calls); returns the seconds per step and whether it was paced."""
    pace = batch_pace(settings, trigger_seconds, lag, started, cost.expect(table.num_rows))
    timed = pace or WritePace(share=1.0)  # a full share never waits: it only times the calls
    steps = process_batch(table, batch_id, store=store, lake=lake, writer=writer, settings=settings, pace=timed)
    cost.observe(table.num_rows, timed.worked)
    return steps, pace is not None


def write_online(
    events: pa.Table, batch_id: int, *, store: OnlineStore, writer: str, settings: Settings, pace: WritePace | None = None
) -> dict[str, float]:
    """Merge one batch of de-duplicated events into every online group (paced by `pace`); returns seconds per step."""
    started = time.perf_counter()
    events = partials.in_order(events)
    for group in WINDOW_GROUPS:
        since = horizon(settings, group)
        _, bots = store.merge_panes(group, partials.pane_partials(events, group, since), writer, batch_id, pace=pace)
        if bots:
            store.flag_bots(bots)
            log.warning("flagged %d users as bots (over %d events in two minutes)", len(bots), BOT_RULE.max_events)
    windows = time.perf_counter()
    store.merge_sessions(partials.session_partials(events, since=horizon(settings, SESSION_FEATURES)), writer, batch_id,
                         pace=pace)
    for group in MERGED_GROUPS:
        store.merge_counts(group, partials.bucket_counts(events, group, since=horizon(settings, group)), writer, batch_id,
                           pace=pace)
    return {"windows": windows - started, "events": time.perf_counter() - windows}


class BatchSink:
    """The query's foreachBatch: collect the batch as Arrow once, then `process_paced_batch`.

    It holds the batch's clients (Redis, the lake, the dead-letter producer): `supervise`
    keeps one across restarts of the query and closes it at the end.
    """

    def __init__(self, settings: Settings, trigger_seconds: float) -> None:
        self.settings = settings
        self.trigger_seconds = trigger_seconds
        self.store = OnlineStore.from_url(settings.redis_url)
        self.lake = Lake(settings.lake_url, settings)
        self.dead_letters = Publisher.from_settings(settings)
        self.cost = MergeCost()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        table = parse_records(batch.toArrow(), self.dead_letters)
        collected = time.perf_counter() - started
        rows = table.num_rows
        oldest = pc.min(table.column("ingest_time")).as_py() if rows else None
        oldest_ingest = oldest.timestamp() if oldest else None
        steps, paced = process_paced_batch(
            table, batch_id, store=self.store, lake=self.lake, writer=_writer_id(checkpoint_path(self.settings)),
            settings=self.settings, trigger_seconds=self.trigger_seconds,
            lag=time.time() - oldest_ingest if oldest_ingest else None, started=started, cost=self.cost,
        )  # fmt: skip
        _record(self.store, "windows", batch_id, rows, collected + steps["dedupe"] + steps["windows"], oldest_ingest)
        _record(self.store, "events", batch_id, rows, collected + steps["dedupe"] + steps["lake"] + steps["events"],
                oldest_ingest)  # fmt: skip
        lag = f"{time.time() - oldest_ingest:.2f}" if oldest_ingest else "-"
        log.info(
            "batch %d: %d rows in %.2f s (collect %.2f, %s), lag %s s%s",
            batch_id, rows, time.perf_counter() - started, collected,
            ", ".join(f"{k} {v:.2f}" for k, v in steps.items()), lag, ", paced" if paced else "",
        )  # fmt: skip

    def close(self, timeout: float = 10.0) -> None:
        """Deliver the dead letters still queued (each batch already waited for its own) and close the clients."""
        try:
            self.dead_letters.close(timeout)
        finally:
            self.store.client.close()


def checkpoint_path(settings: Settings) -> Path:
    """Where the query keeps its checkpoint (its offsets and batch ids: what a restart resumes from)."""
    return Path(settings.checkpoint_dir) / QUERY


def start(spark: SparkSession, settings: Settings, options: StreamOptions = StreamOptions(),
          sink: BatchSink | None = None) -> list:  # fmt: skip
    """Start the streaming query, writing its batches with `sink` (default: a new `BatchSink`); returns it in
    a list (StreamingQuery objects)."""
    query = (
        read_records(spark, settings, options)
        .writeStream.queryName(QUERY)
        .option("checkpointLocation", str(checkpoint_path(settings)))
        .trigger(processingTime=f"{options.trigger_seconds} seconds")
        .foreachBatch(sink or BatchSink(settings, options.trigger_seconds))
        .start()
    )
    return [query]


def run_to_end(queries: list) -> None:
    """Process everything the topic holds now, then stop the queries (tests and benchmarks)."""
    try:
        for query in queries:
            query.processAllAvailable()
    finally:
        for query in queries:
            query.stop()


@dataclass
class RestartPolicy:
    """When `clickrec stream` starts a failed query again: after `first_delay` seconds, doubled
    for each earlier failure in the last `period` (at most `max_delay`); past `max_failures`
    failures in that period it gives up, and the process's own supervisor (compose's restart
    policy, or the next `make up`) takes over. A failure is Redis, the broker or the lake away
    for longer than their clients retry: the query's checkpoint lets a restart lose nothing."""

    max_failures: int
    period: float = 600.0
    first_delay: float = 1.0
    max_delay: float = 60.0
    failures: deque[float] = field(default_factory=deque)  #: monotonic times within `period`

    def after_failure(self, now: float) -> float | None:
        """Count a failure at `now` (monotonic seconds): the seconds to wait before the restart, or None to give up."""
        self.failures.append(now)
        while self.failures[0] <= now - self.period:
            self.failures.popleft()
        if len(self.failures) > self.max_failures:
            return None
        return min(self.max_delay, self.first_delay * 2 ** (len(self.failures) - 1))


def failure_summary(message: str) -> str:
    """The line that says why a streaming query failed: the last line of the error's own message,
    before the query's description that Spark appends (the whole traceback is logged by py4j)."""
    lines = [line.strip() for line in message.split("=== Streaming Query ===")[0].splitlines() if line.strip()]
    return lines[-1] if lines else message


def supervise(
    spark: SparkSession, settings: Settings, options: StreamOptions, stop: threading.Event,
    policy: RestartPolicy | None = None,
) -> None:  # fmt: skip
    """Run the streaming query until `stop` is set, beating the stream's heartbeat every second and
    starting the query again from its checkpoint when it fails, as `policy` (default: STREAM_MAX_RESTARTS
    in ten minutes) says; raises RuntimeError when the policy gives up."""
    policy = policy or RestartPolicy(settings.stream_max_restarts)
    heartbeat = _Heartbeat(OnlineStore.from_url(settings.redis_url))
    sink = BatchSink(settings, options.trigger_seconds)  # one for every restart: its clients reconnect by themselves
    queries = start(spark, settings, options, sink)
    log.info("streaming from %s topic %s; checkpoints in %s", settings.kafka_bootstrap, settings.clicks_topic, settings.checkpoint_dir)
    try:
        while not stop.wait(1.0):
            heartbeat.beat()
            failed = next((query for query in queries if not query.isActive), None)
            if failed is None:
                continue
            error = failed.exception()
            for query in queries:
                query.stop()
            delay = policy.after_failure(time.monotonic())
            if delay is None:
                raise RuntimeError(
                    f"streaming query {failed.name} failed {len(policy.failures)} times in {policy.period:.0f} s, "
                    f"more than STREAM_MAX_RESTARTS={policy.max_failures}; the last time: {failure_summary(str(error))}"
                )
            log.error("streaming query %s failed: %s", failed.name, failure_summary(str(error)))
            log.warning("starting query %s again from its checkpoint in %.1f s (failure %d of %d allowed in %.0f s)",
                        failed.name, delay, len(policy.failures), policy.max_failures, policy.period)  # fmt: skip
            if stop.wait(delay):
                break
            queries = start(spark, settings, options, sink)
            log.info("streaming query %s started again from its checkpoint", failed.name)
    finally:
        for query in queries:
            query.stop()
        sink.close()
        heartbeat.store.client.close()


class _Heartbeat:
    """The stream's heartbeat in Redis (the API's /ready reads it): Redis being away is logged, not raised."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self.reachable = True

    def beat(self) -> None:
        try:
            self.store.beat("stream")
        except redis.RedisError as error:
            if self.reachable:
                log.warning("cannot write the stream's heartbeat to Redis (%s); the stream goes on", error)
            self.reachable = False
            return
        if not self.reachable:
            log.info("Redis is reachable again: the stream's heartbeat goes on")
        self.reachable = True


def run(settings: Settings, options: StreamOptions = StreamOptions()) -> None:
    """`clickrec stream`: run until interrupted, starting a failed query again (see `supervise`)."""
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per Spark callback otherwise
    spark = spark_session("clickrec-stream", settings)
    spark.sparkContext.setLogLevel("WARN")
    try:
        supervise(spark, settings, options, threading.Event())
    except KeyboardInterrupt:
        log.info("stopped the streaming queries")
