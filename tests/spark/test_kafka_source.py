"""The `clickrec_kafka` streaming source against the real broker: exactly once, admission control,
restarts from a checkpoint, a broker log reset underneath the checkpoint, and (opt-in) throughput."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

from feature_store.settings import Settings
from producer.publisher import Publisher
from producer.topics import TopicRecord, ensure_topics, read_topic
from spark_jobs.kafka_source import ARROW_SCHEMA, KafkaRange, KafkaSource, KafkaStreamReader, _share, pack
from tests.services import unique_topic_name

logger = logging.getLogger(__name__)

Row = tuple[str, str, int, int, int]  # key, value, partition, offset, timestamp in ms


# -- no broker needed ------------------------------------------------------------------------


def test_arrow_schema_is_exactly_what_spark_checks_for() -> None:
    assert ARROW_SCHEMA == pa.schema(
        [
            ("key", pa.string()),
            ("value", pa.string()),
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
        ]
    )


def test_the_row_budget_is_shared_in_proportion_and_never_exceeded() -> None:
    assert _share({0: 10, 1: 20, 2: 0}, 100) == {0: 10, 1: 20, 2: 0}
    assert _share({0: 100, 1: 300, 2: 0}, 40) == {0: 10, 1: 30, 2: 0}
    small = _share({0: 5, 1: 5, 2: 5}, 2)
    assert sum(small.values()) == 2 and all(0 <= n <= 5 for n in small.values())
    assert sum(_share({0: 1, 1: 1_000_000}, 1).values()) == 1


def test_small_ranges_share_a_task_and_no_task_exceeds_its_rows() -> None:
    live = [KafkaRange("t", p, 1_000, 1_000 + n) for p, n in enumerate([700, 650, 680])]
    assert [task.ranges for task in pack(live, 200_000)] == [tuple(live)]  # a live batch: one task
    backlog = [KafkaRange("t", p, o, o + 80_000) for p in range(3) for o in (0, 80_000)]
    assert len(pack(backlog, 100_000)) == 6  # no two pieces fit together: every core gets work
    mixed = [KafkaRange("t", 0, 0, 60), KafkaRange("t", 1, 0, 50), KafkaRange("t", 2, 0, 40), KafkaRange("t", 3, 0, 30)]
    tasks = pack(mixed, 100)
    assert sorted(r.partition for task in tasks for r in task.ranges) == [0, 1, 2, 3]  # every range exactly once
    assert all(sum(r.rows for r in task.ranges) <= 100 for task in tasks) and len(tasks) == 2


# -- helpers ---------------------------------------------------------------------------------


def _topic(stack: Settings, hint: str, partitions: int = 3) -> str:
    topic = unique_topic_name(hint)
    ensure_topics(stack.kafka_bootstrap, {topic: partitions})
    return topic


def _produce(stack: Settings, topic: str, start: int, count: int) -> None:
    """``count`` keyed JSON messages numbered from ``start`` (keys spread them over the partitions)."""
    publisher = Publisher(stack.kafka_bootstrap, clicks_topic=topic, dlq_topic=topic + ".dlq")
    for i in range(start, start + count):
        publisher.publish(f"user-{i % 97}", json.dumps({"n": i, "user": f"user-{i % 97}"}))
    publisher.flush()


def _expected(stack: Settings, topic: str) -> set[Row]:
    records: list[TopicRecord] = read_topic(stack.kafka_bootstrap, topic, timeout=60)
    return {(r.key.decode(), r.value.decode(), r.partition, r.offset, r.timestamp_ms) for r in records}


def _stream(spark: SparkSession, stack: Settings, topic: str, **options: str) -> DataFrame:
    spark.dataSource.register(KafkaSource)
    reader = spark.readStream.format("clickrec_kafka").option("bootstrap", stack.kafka_bootstrap).option("topic", topic)
    for name, value in options.items():
        reader = reader.option(name, value)
    return reader.load()


class Sink:
    """A foreachBatch sink keyed by batch id: a batch re-run after a restart replaces itself
    (that is what makes a foreachBatch sink exactly-once), so duplicates here are the source's."""

    def __init__(self) -> None:
        self.batches: dict[int, list[Row]] = {}

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = batch.selectExpr("key", "value", "partition", "offset", "unix_millis(timestamp) AS ts").collect()
        self.batches[batch_id] = [(r.key, r.value, r.partition, r.offset, r.ts) for r in rows]

    def rows(self) -> list[Row]:
        return [row for batch in self.batches.values() for row in batch]


def _run_available_now(df: DataFrame, sink: Sink, checkpoint: Path, timeout: float = 180) -> None:
    query = df.writeStream.foreachBatch(sink).trigger(availableNow=True).option("checkpointLocation", str(checkpoint))
    started = query.start()
    assert started.awaitTermination(timeout), f"availableNow query still running after {timeout} s"
    assert started.exception() is None, started.exception()


def _wait_for(condition: Callable[[], bool], query, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if query.exception() is not None:
            raise AssertionError(f"query failed while waiting for {what}: {query.exception()}")
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


# -- against the broker ----------------------------------------------------------------------


@pytest.mark.integration
def test_live_stream_delivers_every_message_exactly_once(spark: SparkSession, stack: Settings, tmp_path: Path) -> None:
    topic = _topic(stack, "live")
    _produce(stack, topic, 0, 2_000)  # a backlog ...
    sink = Sink()
    query = (
        _stream(spark, stack, topic)
        .writeStream.foreachBatch(sink)
        .trigger(processingTime="200 milliseconds")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .start()
    )
    try:
        _wait_for(lambda: len(sink.rows()) >= 2_000, query, 120, "the backlog")
        _produce(stack, topic, 2_000, 1_000)  # ... then live data, whose tail batch must not get stuck
        _wait_for(lambda: len(sink.rows()) >= 3_000, query, 60, "the live messages")
    finally:
        query.stop()

    rows = sink.rows()
    expected = _expected(stack, topic)
    assert len(expected) == 3_000
    assert len(rows) == len(set(rows)) == 3_000
    assert set(rows) == expected  # key, value, partition, offset and broker timestamp all match
    assert {r[2] for r in rows} == {0, 1, 2}


@pytest.mark.integration
def test_max_rows_per_batch_limits_every_micro_batch(spark: SparkSession, stack: Settings, tmp_path: Path) -> None:
    topic = _topic(stack, "limit")
    _produce(stack, topic, 0, 1_000)
    sink = Sink()

    _run_available_now(_stream(spark, stack, topic, maxRowsPerBatch="300"), sink, tmp_path / "checkpoint")

    sizes = [len(sink.batches[b]) for b in sorted(sink.batches)]
    assert max(sizes) <= 300 and sum(sizes) == 1_000, sizes
    assert len([s for s in sizes if s > 0]) >= 4, sizes
    assert set(sink.rows()) == _expected(stack, topic)


@pytest.mark.integration
def test_a_restarted_query_continues_from_its_checkpoint(spark: SparkSession, stack: Settings, tmp_path: Path) -> None:
    topic = _topic(stack, "restart")
    checkpoint = tmp_path / "checkpoint"
    _produce(stack, topic, 0, 1_500)
    sink = Sink()
    # Small batches so the query is stopped with most of the backlog still unread.
    query = (
        _stream(spark, stack, topic, maxRowsPerBatch="200")
        .writeStream.foreachBatch(sink)
        .trigger(processingTime="100 milliseconds")
        .option("checkpointLocation", str(checkpoint))
        .start()
    )
    try:
        _wait_for(lambda: len(sink.rows()) >= 400, query, 120, "a few batches")
    finally:
        query.stop()
    first_run = dict(sink.batches)
    assert sum(len(b) for b in first_run.values()) < 1_500

    _produce(stack, topic, 1_500, 500)
    _run_available_now(_stream(spark, stack, topic, maxRowsPerBatch="200"), sink, checkpoint)

    assert min(set(sink.batches) - set(first_run)) <= max(first_run) + 1  # batch ids continued
    rows = sink.rows()
    assert len(rows) == len(set(rows)) == 2_000  # nothing lost, nothing twice
    assert set(rows) == _expected(stack, topic)


@pytest.mark.integration
def test_a_checkpoint_past_the_log_end_resumes_from_earliest(
    spark: SparkSession, stack: Settings, tmp_path: Path
) -> None:
    # The native broker keeps its log in memory: after a restart the topic is back at offset 0
    # while the checkpoint remembers ~300 per partition. Simulated by pointing the checkpoint
    # at a new topic of the same shape holding fewer messages.
    before, after = _topic(stack, "before-reset"), _topic(stack, "after-reset")
    checkpoint = tmp_path / "checkpoint"
    _produce(stack, before, 0, 900)
    _run_available_now(_stream(spark, stack, before), Sink(), checkpoint)
    _produce(stack, after, 0, 60)

    sink = Sink()
    _run_available_now(_stream(spark, stack, after), sink, checkpoint)

    rows = sink.rows()
    assert len(rows) == len(set(rows)) == 60
    assert set(rows) == _expected(stack, after)
    # And the next messages are read once, from where the resumed query left off.
    _produce(stack, after, 60, 30)
    _run_available_now(_stream(spark, stack, after), sink, checkpoint)
    assert sorted(sink.rows()) == sorted(_expected(stack, after))


@pytest.mark.integration
def test_the_reset_is_detected_and_logged_by_the_reader(stack: Settings, caplog: pytest.LogCaptureFixture) -> None:
    # The query above runs the reader in Spark's Python runner process, whose logs pytest
    # cannot capture: check the warning and the planned ranges on the reader itself.
    topic = _topic(stack, "reset-reader")
    _produce(stack, topic, 0, 30)
    reader = KafkaStreamReader({"bootstrap": stack.kafka_bootstrap, "topic": topic})
    try:
        ends = reader.latestOffset(reader.initialOffset(), ReadAllAvailable())
        assert sum(ends.values()) == 30
        stale = {p: 1_000 for p in ends}
        with caplog.at_level(logging.WARNING, logger="spark_jobs.kafka_source"):
            end = reader.latestOffset(stale, ReadAllAvailable())
            ranges = [r for task in reader.partitions(stale, end) for r in task.ranges]
        assert end == ends
        assert sorted((r.partition, r.start, r.end) for r in ranges) == [(int(p), 0, e) for p, e in ends.items()]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 3, warnings  # once per partition, not again for partitions()
        assert f"topic {topic} partition 0: checkpoint offset 1000 is past the log end {ends['0']}" in warnings[0]
        assert "resuming from the earliest offset" in warnings[0]
        # Admission control from the reset point.
        limited = reader.latestOffset(stale, ReadMaxRows(10))
        assert sum(limited.values()) == 10
        # The probe's own memory of the ends is stale too (the reader outlived the reset).
        reader.probe._known = {int(p): 5_000 for p in ends}
        assert reader.latestOffset(ends, ReadAllAvailable()) == ends
        # A batch planned before the reset and re-run after it: its range no longer exists.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spark_jobs.kafka_source"):
            assert reader.partitions({"0": 0, "1": 0, "2": 0}, stale) == []
        assert "planned offsets [0, 1000) are past the log end" in caplog.records[0].getMessage()
    finally:
        reader.stop()


@pytest.mark.integration
def test_the_end_is_the_true_log_end_not_the_listed_high_watermark(
    stack: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = _topic(stack, "true-end", partitions=1)
    _produce(stack, topic, 0, 500)  # one or a few record batches: the listed high is short of 500
    reader = KafkaStreamReader({"bootstrap": stack.kafka_bootstrap, "topic": topic, "maxRowsPerPartition": "120"})
    try:
        start = reader.initialOffset()
        end = reader.latestOffset(start, ReadAllAvailable())
        assert end == {"0": 500}
        assert reader.latestOffset(end, ReadAllAvailable()) == end  # probed again from the remembered end
        tasks = reader.partitions(start, end)
        ranges = sorted((r for task in tasks for r in task.ranges), key=lambda r: r.start)
        assert [(r.start, r.end) for r in ranges] == [(0, 100), (100, 200), (200, 300), (300, 400), (400, 500)]
        assert [len(task.ranges) for task in tasks] == [1] * 5  # each as big as a task may be
        # read() (normally in a worker) returns exactly its range.
        reader = pickle_roundtrip(reader)
        offsets = [o for task in tasks for b in reader.read(task) for o in b.column("offset").to_pylist()]
        assert sorted(offsets) == list(range(500))
        assert list(reader.read(KafkaRange(topic, 0, 490, 490))) == []
        # A range that runs past the log end (reset after planning) stops at the end, with a warning.
        with caplog.at_level(logging.WARNING, logger="spark_jobs.kafka_source"):
            tail = [o for b in reader.read(KafkaRange(topic, 0, 400, 600)) for o in b.column("offset").to_pylist()]
        assert tail == list(range(400, 500))
        assert "the log ends at 500 before the planned end 600" in caplog.text
    finally:
        reader.stop()


@pytest.mark.integration
def test_a_partition_written_without_pause_gets_a_proven_end_not_an_error(
    stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under steady writes the probe's first short fetch may bring nothing (a busy machine; here a
    chase of 0.1 ms forces it) and the retry from the listed high watermark gets no EOF either: it
    must settle for a lower bound, as the first fetch does, not raise (that stopped the stream)."""
    import threading

    import spark_jobs.kafka_source as source

    topic = _topic(stack, "steady-writes", partitions=1)
    _produce(stack, topic, 0, 100)
    stop = threading.Event()

    def write_without_pause() -> None:
        # a short local queue: the writes reach the broker without pause, and stop soon after `stop`
        publisher = Publisher(stack.kafka_bootstrap, clicks_topic=topic, dlq_topic=topic + ".dlq",
                              **{"linger.ms": 0, "queue.buffering.max.messages": 1_000})  # fmt: skip
        n = 100
        while not stop.is_set():
            publisher.publish("k", json.dumps({"n": n}))
            publisher.poll()
            n += 1
        publisher.flush()

    writer = threading.Thread(target=write_without_pause, daemon=True)
    monkeypatch.setattr(source, "CHASE_SECONDS", 0.0001)
    probe = source._EndProbe(stack.kafka_bootstrap, topic, {}, timeout=5.0)
    writer.start()
    try:
        ends = []
        for _ in range(30):
            listed = probe.watermarks(0)[1]
            end = probe.true_ends([0], chase=True)[0]
            assert end >= listed  # never short of what the broker already listed
            ends.append(end)
        assert ends == sorted(ends) and ends[-1] > ends[0]  # it follows the writes, never backwards
        # the other two places that ask for the end: a query starting from the latest offset ...
        reader = KafkaStreamReader({"bootstrap": stack.kafka_bootstrap, "topic": topic, "startingOffsets": "latest"})
        try:
            listed = probe.watermarks(0)[1]
            assert reader.initialOffset()["0"] >= listed
            # ... and Trigger.AvailableNow's target
            reader.prepareForTriggerAvailableNow()
            assert reader._target is not None and reader._target[0] >= listed
        finally:
            reader.stop()
    finally:
        stop.set()
        writer.join(timeout=60)
        probe.close()
    assert not writer.is_alive()  # every write is in the log: the end below is exact
    after = source._EndProbe(stack.kafka_bootstrap, topic, {})
    try:
        final = after.true_ends([0])[0]  # the writes have stopped: an EOF gives the true end
    finally:
        after.close()
    assert ends[-1] <= final  # a lower bound: every offset below it exists


def pickle_roundtrip(reader: KafkaStreamReader) -> KafkaStreamReader:
    """The reader as a worker gets it (Spark pickles it; the driver's consumer must stay behind)."""
    import pickle

    return pickle.loads(pickle.dumps(reader))


# -- throughput (opt-in: CLICKREC_BENCH=1) ---------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("CLICKREC_BENCH"), reason="benchmark: set CLICKREC_BENCH=1 to run it")
def test_throughput_of_a_one_million_message_backlog(spark: SparkSession, stack: Settings, tmp_path: Path) -> None:
    count = int(os.environ.get("CLICKREC_BENCH_MESSAGES", 1_000_000))
    topic = _topic(stack, "bench")
    publisher = Publisher(stack.kafka_bootstrap, clicks_topic=topic, dlq_topic=topic + ".dlq")
    rng = random.Random(7)
    for i in range(count):  # ~200 B JSON click events keyed by user
        user = rng.randrange(500_000_000, 501_000_000)
        publisher.publish(
            str(user),
            f'{{"event_id":"{rng.getrandbits(128):032x}","event_time":"2019-10-01T00:00:{i % 60:02d}Z",'
            f'"event_type":"view","product_id":{rng.randrange(1_000_000, 2_000_000)},'
            f'"category_code":"electronics.smartphone","brand":"apple","price":489.07,"user_id":{user}}}',
        )
    publisher.flush(120)

    # Warm up first (JVM code paths, Python workers): the steady rate is what a running pipeline sees.
    warm = _topic(stack, "bench-warm-up")
    _produce(stack, warm, 0, 10_000)
    _run_available_now(_stream(spark, stack, warm), Sink(), tmp_path / "warm-up")

    batches: list[tuple[int, int, float]] = []

    def count_rows(batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        batches.append((batch_id, batch.count(), time.perf_counter() - started))

    started = time.perf_counter()
    _run_available_now(_stream(spark, stack, topic), count_rows, tmp_path / "checkpoint", timeout=600)
    elapsed = time.perf_counter() - started
    rows = sum(n for _, n, _ in batches)
    busy = sum(s for _, _, s in batches)
    logger.info(
        "clickrec_kafka: %d rows in %.1f s including query start (%.0f rows/s); batches %.1f s (%.0f rows/s)",
        rows, elapsed, rows / elapsed, busy, rows / busy,
    )  # fmt: skip
    assert rows == count
    assert rows / busy > 50_000
