"""A Kafka streaming source for Spark written with the Python Data Source API.

Spark's built-in Kafka source needs the spark-sql-kafka jar, which cannot be
fetched here (no Maven repository, see PLATFORM.md), so this source reads Kafka
with confluent-kafka from Python:

    spark.dataSource.register(KafkaSource)
    df = (spark.readStream.format("clickrec_kafka")
          .option("bootstrap", "127.0.0.1:9092").option("topic", "clicks").load())

Options:

- ``bootstrap`` (required): Kafka bootstrap servers.
- ``topic`` (required): one topic; every partition of it is read.
- ``startingOffsets``: ``earliest`` (default) or ``latest``; only for a query
  without a checkpoint. Earliest by default because a clickrec query that starts
  fresh should process the backlog the replay put in the topic.
- ``maxRowsPerBatch``: admission control, at most this many rows per micro-batch.
- ``maxRowsPerPartition``: a Spark task reads at most this many rows (default
  200000): a partition's offset range is split so every core works on a backlog,
  and the ranges of a small batch share one task.
- ``readTimeoutSeconds``: a task fails when its range makes no progress for this
  long (default 120), e.g. when the broker is gone.
- ``kafka.<name>``: passed to the confluent-kafka consumers as ``<name>``.

Offsets are ``{"<partition>": next_offset}``. The end of a partition is its
*true* end found by fetching to PARTITION_EOF, not the listed high watermark
(tansu lists the base offset of the last record batch + 1, PLATFORM.md quirk 1).
When a checkpointed offset is past a partition's end (the in-memory broker lost
its log on a restart) the source warns and resumes that partition from its
earliest offset instead of waiting forever for offsets that will never come.
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType, TimestampType

logger = logging.getLogger(__name__)

#: What the source returns: the Kafka record with its value (the JSON event) as a string.
KAFKA_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("value", StringType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),  # broker/produce time, UTC
    ]
)
#: The Arrow schema `read()` must yield, derived the way Spark checks it (any difference in
#: type, unit, time zone or nullability fails with DATA_SOURCE_RETURN_SCHEMA_MISMATCH).
ARROW_SCHEMA: pa.Schema = to_arrow_schema(KAFKA_SCHEMA, timezone="UTC")

DEFAULT_ROWS_PER_PARTITION = 200_000
#: How long the end probe fetches a partition that keeps growing before settling for a lower bound.
CHASE_SECONDS = 0.1
Offsets = dict[str, int]


@dataclass(frozen=True)
class KafkaRange(InputPartition):
    """Offsets ``[start, end)`` of one Kafka partition (alone, or a piece of a `KafkaTask`)."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def rows(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class KafkaTask(InputPartition):
    """One Spark task: ranges read one after another (small ones share a task, see `pack`)."""

    ranges: tuple[KafkaRange, ...]


def pack(ranges: Sequence[KafkaRange], rows_per_task: int) -> list[KafkaTask]:
    """Ranges into as few tasks as hold at most `rows_per_task` rows each (first fit, largest first).

    A live micro-batch of a few thousand rows over three partitions becomes one task
    instead of three: each task costs its Python worker a round of Spark scheduling and
    a Kafka fetch (about 0.1 s here), which is most of a small batch's time.
    """
    bins: list[list[KafkaRange]] = []
    room: list[int] = []
    for piece in sorted(ranges, key=lambda r: r.rows, reverse=True):
        for i, free in enumerate(room):
            if piece.rows <= free:
                bins[i].append(piece)
                room[i] -= piece.rows
                break
        else:
            bins.append([piece])
            room.append(rows_per_task - piece.rows)
    return [KafkaTask(tuple(sorted(b, key=lambda r: (r.partition, r.start)))) for b in bins]


def _client_config(bootstrap: str, extra: Mapping[str, str]) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        # Manual assignment only: the group id is never joined or committed to, but required.
        "group.id": f"clickrec-spark-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "logger": logging.getLogger("librdkafka"),  # into Python logging, not raw stderr
        **extra,
    }


def _key(partition: int) -> str:
    return str(partition)


def _sorted(offsets: Mapping[int, int]) -> Offsets:
    # Always the same key order: Spark compares offsets as JSON text, and a reordered but
    # equal dict would look like new data and start empty micro-batches.
    return {_key(p): int(offsets[p]) for p in sorted(offsets)}


class _EndProbe:
    """Finds the true end of each partition with one long-lived consumer (driver side).

    Spark asks for the latest offset at every trigger, so the probe remembers the
    last end it saw per partition and fetches only from there (or from the listed
    high watermark when more has been written since): at most the tail record batch
    is read, never a whole partition.
    """

    def __init__(self, bootstrap: str, topic: str, extra: Mapping[str, str], timeout: float = 10.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._known: dict[int, int] = {}
        self.inexact: set[int] = set()  # partitions whose last `true_ends` is a lower bound (see there)
        self._consumer = Consumer(
            {
                **_client_config(bootstrap, extra),
                # An empty fetch at the end must answer at once, not after the default 500 ms.
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "latest",
            }
        )

    def partitions(self) -> list[int]:
        meta = self._consumer.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            error = meta.error if meta is not None and meta.error else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
            raise KafkaException(error)
        return sorted(meta.partitions)

    @property
    def known(self) -> dict[int, int]:
        """The latest end seen per partition (a proven offset: the log held it)."""
        return dict(self._known)

    def watermarks(self, partition: int) -> tuple[int, int]:
        """(earliest, listed high) offsets; the listed high may be short of the true end."""
        low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=self.timeout)
        return low, high

    def earliest(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: self.watermarks(p)[0] for p in partitions}

    def true_ends(self, partitions: Sequence[int], *, chase: bool = False) -> dict[int, int]:
        """The true log end of each partition (the offset the next record will get).

        A partition written to without pause may never report its end: every fetch
        brings the newest records. With `chase`, such a partition ends, after
        CHASE_SECONDS of fetching, past the last record seen from the remembered end (a
        lower bound of its true end: every offset below it exists); `inexact` then
        names it. The next trigger reads the rest: chasing longer would only delay
        this one (under live load every probe used to take the whole second).
        """
        listed = {p: self.watermarks(p)[1] for p in partitions}
        start = {p: max(listed[p], self._known.get(p, 0)) for p in partitions}
        self.inexact = set()
        ends = self._ends_or_bounds(start, CHASE_SECONDS if chase else 1.0, CHASE_SECONDS if chase else None)
        missing = [p for p in partitions if p not in ends]
        if missing:
            # Fetching from a remembered end past the log end gets no EOF (the log was
            # reset), and on a busy machine the first fetch may bring nothing in time: the
            # listed high watermark is always <= the true end, so retry from there, longer,
            # settling for a lower bound again when chasing (a partition written without pause
            # reports no EOF here either: raising then used to stop the stream under load).
            ends.update(self._ends_or_bounds({p: listed[p] for p in missing}, self.timeout, CHASE_SECONDS if chase else None))
        missing = [p for p in partitions if p not in ends]
        if missing:
            raise TimeoutError(
                f"topic {self.topic}: partitions {missing} did not report their end within {self.timeout} s"
            )
        self._known.update(ends)
        return ends

    def _ends_or_bounds(self, start: Mapping[int, int], timeout: float, settle: float | None) -> dict[int, int]:
        """The ends reported by EOF fetching from `start`; with `settle`, a partition that brought records
        past its start but no EOF within `settle` seconds ends past the last of them (added to `inexact`)."""
        ends, seen = self._fetch_to_eof(start, timeout, settle)
        if settle is not None:
            for p, first in start.items():
                if p not in ends and seen.get(p, -1) > first:
                    ends[p] = seen[p]
                    self.inexact.add(p)
        return ends

    def _fetch_to_eof(
        self, start: Mapping[int, int], timeout: float, settle: float | None = None
    ) -> tuple[dict[int, int], dict[int, int]]:
        """(ends reported by EOF, 1 + the last offset seen) of each partition, fetching from `start` until every
        partition reported its end, for at most `timeout` s; with `settle`, after `settle` s a partition that
        brought records counts as done too."""
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in start.items()])
        ends: dict[int, int] = {}
        seen: dict[int, int] = {}
        began = time.monotonic()
        deadline = began + timeout

        def done() -> int:
            if settle is None or time.monotonic() - began < settle:
                return len(ends)
            return len(ends.keys() | {p for p, last in seen.items() if last > start[p]})

        try:
            while done() < len(start) and time.monotonic() < deadline:
                # Short waits: consume() returns early only once num_messages have arrived.
                for msg in consumer.consume(num_messages=10_000, timeout=0.01):
                    err = msg.error()
                    if err is None:
                        # A record of the tail batch: the EOF that follows carries the end.
                        seen[msg.partition()] = max(seen.get(msg.partition(), 0), msg.offset() + 1)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        ends[msg.partition()] = msg.offset()
                    else:
                        raise KafkaException(err)
        finally:
            consumer.unassign()
        return ends, seen

    def close(self) -> None:
        self._consumer.close()


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans offset ranges in the driver and reads them in the Python workers."""

    def __init__(self, options: Mapping[str, str]) -> None:
        opts = {k.lower(): v for k, v in options.items()}
        try:
            self.bootstrap = opts["bootstrap"]
            self.topic = opts["topic"]
        except KeyError as missing:
            raise ValueError(f"clickrec_kafka: option {missing} is required") from None
        self.starting = opts.get("startingoffsets", "earliest").lower()
        if self.starting not in ("earliest", "latest"):
            raise ValueError(f"clickrec_kafka: startingOffsets must be earliest or latest, not {self.starting!r}")
        self.max_rows_per_batch = int(opts["maxrowsperbatch"]) if opts.get("maxrowsperbatch") else None
        if self.max_rows_per_batch is not None and self.max_rows_per_batch < 1:
            raise ValueError("clickrec_kafka: maxRowsPerBatch must be >= 1")
        self.rows_per_partition = max(1, int(opts.get("maxrowsperpartition", DEFAULT_ROWS_PER_PARTITION)))
        self.read_timeout = float(opts.get("readtimeoutseconds", 120))
        # Original case: librdkafka property names are lower case anyway.
        self.kafka_config = {k[len("kafka.") :]: v for k, v in options.items() if k.lower().startswith("kafka.")}
        self._probe: _EndProbe | None = None
        self._target: dict[int, int] | None = None  # fixed ends under Trigger.AvailableNow
        self._warned: set[tuple[int, int]] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Spark pickles the reader to the workers for read(): the driver's consumer stays behind.
        state = self.__dict__.copy()
        state["_probe"] = None
        return state

    @property
    def probe(self) -> _EndProbe:
        if self._probe is None:
            self._probe = _EndProbe(self.bootstrap, self.topic, self.kafka_config)
        return self._probe

    # -- driver side -------------------------------------------------------------------------

    def initialOffset(self) -> Offsets:
        partitions = self.probe.partitions()
        if self.starting == "latest":
            # a lower bound will do under steady writes: the few records before it are read too
            return _sorted(self.probe.true_ends(partitions, chase=True))
        return _sorted(self.probe.earliest(partitions))

    def getDefaultReadLimit(self) -> ReadLimit:
        if self.max_rows_per_batch is None:
            return ReadAllAvailable()
        return ReadMaxRows(self.max_rows_per_batch)

    def prepareForTriggerAvailableNow(self) -> None:
        # "what is there now": under steady writes, up to a proven offset of the last 0.1 s
        self._target = self.probe.true_ends(self.probe.partitions(), chase=True)
        logger.info("topic %s: Trigger.AvailableNow reads up to %s", self.topic, _sorted(self._target))

    def latestOffset(self, start: Offsets, limit: ReadLimit) -> Offsets:
        partitions = self.probe.partitions()
        ends = self.probe.true_ends(partitions, chase=True)
        for p in self.probe.inexact:
            # A lower bound proves no reset: never read it as one (and never go backwards).
            ends[p] = max(ends[p], start.get(_key(p), 0))
        if self._target is not None:
            # Trigger.AvailableNow: nothing written after prepareForTriggerAvailableNow.
            ends = {p: min(e, self._target[p]) for p, e in ends.items() if p in self._target}
        dropped = sorted(set(start) - {_key(p) for p in ends})
        if dropped:
            logger.warning("topic %s: partitions %s are gone; no longer reading them", self.topic, dropped)
        begin = self._effective_start(start, ends)
        available = {p: max(0, ends[p] - begin[p]) for p in ends}
        if isinstance(limit, ReadMaxRows):
            take = _share(available, limit.max_rows)
        else:
            take = available
        return _sorted({p: begin[p] + take[p] for p in ends})

    def reportLatestOffset(self) -> Offsets | None:
        known = self.probe.known
        return _sorted(known) if known else None

    def partitions(self, start: Offsets, end: Offsets) -> Sequence[KafkaTask]:
        ends = {int(p): o for p, o in end.items()}
        begin = self._effective_start(start, ends)
        # A batch re-planned after a restart may name offsets the broker no longer has (its log
        # was reset since): reading them would wait forever. Skip such a range; the next
        # latestOffset() then sees the checkpoint past the log end and resumes from earliest.
        # An end this reader's probe has seen (latestOffset just planned it) exists: only a
        # batch planned by an earlier run (no such end seen here yet) needs the broker's word.
        log_end = {p: o for p, o in self.probe.known.items() if p in ends}
        unchecked = sorted(p for p in ends if ends[p] > log_end.get(p, -1))
        if unchecked:
            log_end.update(self.probe.true_ends(unchecked, chase=True))
            unproven = [p for p in self.probe.inexact if p in unchecked and ends[p] > log_end[p]]
            if unproven:  # a lower bound short of the planned end proves nothing: ask for the exact end
                log_end.update(self.probe.true_ends(unproven))
        ranges = []
        for p in sorted(ends):
            lo, hi = begin[p], ends[p]
            if hi > log_end.get(p, hi):
                logger.warning(
                    "topic %s partition %d: planned offsets [%d, %d) are past the log end %d "
                    "(the broker's log was reset?); skipping them",
                    self.topic, p, lo, hi, log_end[p],
                )  # fmt: skip
                continue
            if hi <= lo:
                continue
            # Equal pieces of at most rows_per_partition: 333k rows become 2 x 167k, not 200k + 133k,
            # so the cores finish together.
            pieces = -(-(hi - lo) // self.rows_per_partition)
            size = -(-(hi - lo) // pieces)
            ranges.extend(KafkaRange(self.topic, p, o, min(o + size, hi)) for o in range(lo, hi, size))
        return pack(ranges, self.rows_per_partition)

    def _effective_start(self, start: Offsets, ends: Mapping[int, int]) -> dict[int, int]:
        """Where each partition really starts: the checkpoint, or earliest if new or past the end."""
        begin: dict[int, int] = {}
        need_earliest = []
        for p, end in ends.items():
            offset = start.get(_key(p))
            if offset is None:
                need_earliest.append(p)  # a partition added since the last batch: read it all
            elif offset > end:
                if (p, offset) not in self._warned:
                    self._warned.add((p, offset))
                    logger.warning(
                        "topic %s partition %d: checkpoint offset %d is past the log end %d "
                        "(the broker's log was reset?); resuming from the earliest offset",
                        self.topic, p, offset, end,
                    )  # fmt: skip
                need_earliest.append(p)
            else:
                begin[p] = offset
        if need_earliest:
            begin.update(self.probe.earliest(need_earliest))
        return begin

    def commit(self, end: Offsets) -> None:
        # Progress lives in Spark's checkpoint; nothing is committed to Kafka.
        logger.debug("topic %s: batch up to %s committed", self.topic, end)

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    # -- worker side -------------------------------------------------------------------------

    def read(self, partition: KafkaTask | KafkaRange) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        """The records of a task's ranges, in order, as Arrow batches (runs in a Python worker)."""
        ranges = partition.ranges if isinstance(partition, KafkaTask) else (partition,)
        for piece in ranges:
            yield from read_range(piece, self.bootstrap, self.kafka_config, self.read_timeout)


def _share(available: Mapping[int, int], budget: int) -> dict[int, int]:
    """Split ``budget`` rows over partitions in proportion to what each has available."""
    total = sum(available.values())
    if total <= budget:
        return dict(available)
    take = {p: n * budget // total for p, n in available.items()}
    left = budget - sum(take.values())
    # Hand out the rounding remainder (fewer rows than partitions) to the biggest backlogs.
    for p in sorted(available, key=lambda p: available[p] - take[p], reverse=True):
        if left == 0:
            break
        if available[p] > take[p]:
            take[p] += 1
            left -= 1
    return take


def _strings(values: list[bytes | None]) -> pa.Array:
    # Bytes -> binary -> string is ~30x faster than letting Arrow take Python bytes as strings.
    array = pa.array(values, pa.binary())
    try:
        return array.cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8: keep the record, replace the bad bytes
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in values], pa.string())


def _batch(topic: str, partition: int, keys: list, values: list, offsets: list, stamps: list) -> pa.RecordBatch:
    n = len(offsets)
    micros = np.asarray(stamps, dtype=np.int64)
    missing = micros < 0  # no timestamp (-1)
    return pa.RecordBatch.from_arrays(
        [
            _strings(keys),
            _strings(values),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.array(np.full(n, partition, dtype=np.int32)),
            pa.array(np.asarray(offsets, dtype=np.int64)),
            pa.array(micros * 1000, type=pa.timestamp("us", tz="UTC"), mask=missing if missing.any() else None),
        ],
        schema=ARROW_SCHEMA,
    )


def read_range(
    part: KafkaRange, bootstrap: str, extra: Mapping[str, str] | None = None, stall_timeout: float = 120.0
) -> Iterator[pa.RecordBatch]:
    """Read offsets ``[part.start, part.end)`` of one partition; stop early, with a warning, if the log ends first."""
    if part.end <= part.start:
        return
    key, consumer = _borrow(bootstrap, extra or {})
    reusable = False
    topic, partition, end = part.topic, part.partition, part.end
    last = part.start - 1  # the last offset read so far
    last_progress = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, partition, part.start)])
        while last < end - 1:
            # consume() returns early only once num_messages have arrived: ask for no more than
            # the range still holds, or every small (live) range waits out the whole timeout.
            msgs = consumer.consume(num_messages=min(20_000, end - 1 - last), timeout=0.2)
            truncated_at = None
            if msgs and any(m.error() is not None for m in msgs):
                records = []
                for msg in msgs:
                    err = msg.error()
                    if err is None:
                        records.append(msg)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        # Only an end inside the rest of the range truncates it: an EOF at or
                        # before where we are can only be left over from an earlier range.
                        if max(last, part.start) < msg.offset() < end:
                            truncated_at = msg.offset()
                    elif err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                        truncated_at = last + 1  # the start offset is gone
                    else:
                        raise KafkaException(err)
                msgs = records
            if msgs:
                # One partition, in offset order: anything at or past `end` is the tail (and
                # anything before the start, fetched for an earlier range of a reused consumer).
                offsets = [m.offset() for m in msgs]
                if offsets[-1] >= end:
                    cut = bisect.bisect_left(offsets, end)
                    msgs, offsets = msgs[:cut], offsets[:cut]
                if offsets and offsets[0] <= last:
                    cut = bisect.bisect_right(offsets, last)
                    msgs, offsets = msgs[cut:], offsets[cut:]
            if msgs:
                # Comprehensions, not a per-message loop of appends: this is the hot path.
                keys = [m.key() for m in msgs]
                values = [m.value() for m in msgs]
                # -1 when the record has no timestamp (TIMESTAMP_NOT_AVAILABLE): becomes null.
                stamps = [m.timestamp()[1] for m in msgs]
                last = offsets[-1]
                last_progress = time.monotonic()
                del msgs
                yield _batch(topic, partition, keys, values, offsets, stamps)
            if truncated_at is not None and last < end - 1:
                logger.warning(
                    "topic %s partition %d: the log ends at %d before the planned end %d "
                    "(the broker's log was reset?); the rest of this range is skipped",
                    topic, partition, truncated_at, end,
                )  # fmt: skip
                return
            if time.monotonic() - last_progress > stall_timeout:
                raise TimeoutError(
                    f"topic {topic} partition {partition}: no records for {stall_timeout:.0f} s "
                    f"at offset {last + 1} of [{part.start}, {end}); is the broker up?"
                )
        reusable = True
    except GeneratorExit:  # Spark stopped reading early: the consumer is fine
        reusable = True
        raise
    finally:
        _give_back(key, consumer, reusable)


#: Range consumers kept by a Python worker between tasks (Spark reuses its workers): a new
#: consumer per task and micro-batch costs a connection and a metadata round trip, which
#: a live stream with a 1-s trigger pays every second.
_CONSUMERS: dict[tuple, Consumer] = {}


def _borrow(bootstrap: str, extra: Mapping[str, str]) -> tuple[tuple, Consumer]:
    key = (bootstrap, tuple(sorted(extra.items())))
    consumer = _CONSUMERS.pop(key, None)
    if consumer is None:
        consumer = Consumer(
            {
                **_client_config(bootstrap, extra),
                # Fewer, larger fetches for backlogs; error (not silently jump) if the start is gone.
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "fetch.max.bytes": 64 * 1024 * 1024,
                # A range's records exist already: a fetch parked at the end of one range
                # (the default 500 ms) would hold up the next range of the task.
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "error",
            }
        )
    return key, consumer


def _give_back(key: tuple, consumer: Consumer, reusable: bool) -> None:
    if reusable and key not in _CONSUMERS:
        try:
            consumer.unassign()
            _CONSUMERS[key] = consumer
            return
        except KafkaException:
            pass
    consumer.close()


class KafkaSource(DataSource):
    """``spark.readStream.format("clickrec_kafka")``: a Kafka topic as a stream of records."""

    @classmethod
    def name(cls) -> str:
        return "clickrec_kafka"

    def schema(self) -> StructType:
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> KafkaStreamReader:
        return KafkaStreamReader(self.options)


def register(spark: Any) -> None:
    """Make ``format("clickrec_kafka")`` available in ``spark``."""
    spark.dataSource.register(KafkaSource)
