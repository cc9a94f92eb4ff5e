"""`clickrec replay`: stream a click CSV into Kafka, paced or as fast as possible.

read (bounded blocks) -> encode (validate, JSON) -> pace (optional) -> publish.
Rows that are not valid events go to the dead-letter topic with the raw row and
the reason, and the replay goes on. The summary's numbers add up:
``rows_read == published + rejected``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from queue import Full, Queue
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
from tqdm import tqdm

from producer.encode import EncodedBatch, encode_batch
from producer.events import CSV_TIME_FORMAT, EventSource
from producer.pacing import Pacer, parse_when, rebase_shift
from producer.publisher import Publisher
from producer.readers import MalformedRow, read_batches

log = logging.getLogger(__name__)

Anchor = Literal["auto", "start", "end"]


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """How to replay a file (each maps to a `clickrec replay` option)."""

    speedup: float | None = None  # None: as fast as possible
    rebase_time: str | None = None  # "now" or an ISO time
    rebase_anchor: Anchor = "auto"  # which end of the replayed rows lands on rebase_time
    skip: int = 0
    limit: int | None = None
    fmt: str = "auto"
    block_bytes: int = 8 << 20
    progress: bool = True


@dataclass
class ReplaySummary:
    """What a replay did; `rows_read == published + rejected` when it ends cleanly."""

    rows_read: int = 0
    published: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    shift: timedelta = field(default_factory=timedelta)

    @property
    def rate(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        lines = [
            f"rows read      {self.rows_read:>12,}",
            f"published      {self.published:>12,}",
            f"rejected (DLQ) {self.rejected:>12,}" + (f"  ({self.dead_lettered:,} dead letters stored)"),
            f"time           {self.seconds:>12.1f} s  ({self.rate:,.0f} rows/s)",
        ]
        if self.shift:
            lines.append(f"time shift     {self.shift}  (--rebase-time)")
        if self.interrupted:
            lines.append("interrupted: everything read so far was flushed to the broker")
        return "\n".join(lines)


def event_time_bounds(path: Path, options: ReplayOptions, *, first_only: bool) -> tuple[datetime, datetime]:
    """Earliest and latest well-formed event time among the rows a replay would read."""
    low = high = None
    for batch in read_batches(path, fmt=options.fmt, skip=options.skip, limit=options.limit):
        times = pc.strptime(batch.table["event_time"], format=CSV_TIME_FORMAT, unit="s", error_is_null=True)
        bounds = pc.min_max(times).as_py()
        if bounds["min"] is not None:
            low = bounds["min"] if low is None else min(low, bounds["min"])
            high = bounds["max"] if high is None else max(high, bounds["max"])
            if first_only:
                break
    if low is None or high is None:
        raise ValueError(f"{path}: no row with a valid event_time to rebase on")
    return low.replace(tzinfo=timezone.utc), high.replace(tzinfo=timezone.utc)


def compute_shift(path: Path, options: ReplayOptions) -> timedelta:
    """The `--rebase-time` shift.

    `auto` anchors the *start* of a paced replay on the target (events then
    arrive in real time from there) and the *end* of an unpaced one (everything
    lands in the recent past, the latest rows in the last moments, as if live).
    """
    if options.rebase_time is None:
        return timedelta(0)
    target = parse_when(options.rebase_time)
    anchor = options.rebase_anchor
    if anchor == "auto":
        anchor = "start" if options.speedup else "end"
    first, last = event_time_bounds(path, options, first_only=anchor == "start")
    return rebase_shift(first if anchor == "start" else last, target)


def _estimated_rows(path: Path, bytes_seen: int, rows_seen: int, limit: int | None) -> int | None:
    if path.suffix in (".gz", ".zip") or not rows_seen or not bytes_seen:
        return limit
    estimate = int(path.stat().st_size * rows_seen / bytes_seen)
    return min(estimate, limit) if limit is not None else estimate


@dataclass
class _WorkItem:
    """One encoded block, as the reader thread hands it to the publisher."""

    bytes_seen: int
    malformed: list[MalformedRow]
    encoded: EncodedBatch


_DONE = object()


def _encoded_blocks(path: Path, options: ReplayOptions, shift: timedelta) -> Iterator[_WorkItem]:
    """Encoded blocks from a reader thread, a few blocks ahead of the publisher.

    Arrow's CSV parser and compute kernels release the GIL, so reading and
    encoding overlap with publishing; the bounded queue keeps memory flat.
    """
    queue: Queue = Queue(maxsize=3)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def work() -> None:
        bytes_seen = 0

        def count_bytes(n: int) -> None:
            nonlocal bytes_seen
            bytes_seen += n

        try:
            for batch in read_batches(
                path, fmt=options.fmt, skip=options.skip, limit=options.limit,
                block_bytes=options.block_bytes, on_bytes=count_bytes,
            ):  # fmt: skip
                encoded = encode_batch(batch.table, source=EventSource.REPLAY, shift=shift)
                if not put(_WorkItem(bytes_seen, batch.malformed, encoded)):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)

    worker = threading.Thread(target=work, name="replay-reader", daemon=True)
    worker.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)


def replay(path: Path, publisher: Publisher, options: ReplayOptions = ReplayOptions()) -> ReplaySummary:
    """Replay `path` through `publisher`; Ctrl-C stops early but still flushes."""
    path = Path(path)
    summary = ReplaySummary(shift=compute_shift(path, options))
    if summary.shift:
        log.info("rebasing event times by %s", summary.shift)
    pacer = Pacer(options.speedup) if options.speedup else None
    origin = path.name
    started = time.perf_counter()
    bar = tqdm(
        desc=f"replay {origin}", unit=" events", unit_scale=True, disable=not options.progress, dynamic_ncols=True
    )
    try:
        for item in _encoded_blocks(path, options, summary.shift):
            encoded = item.encoded
            for row in item.malformed:
                publisher.reject(row.text, row.reason, origin)
            for raw, reason in encoded.rejected:
                publisher.reject(raw, reason, origin)
            refused = len(item.malformed) + len(encoded.rejected)
            summary.rejected += refused
            summary.rows_read += refused
            bar.update(refused)
            keys, values = encoded.keys.to_pylist(), encoded.values.to_pylist()
            if pacer is None:
                summary.rows_read += publisher.publish_many(keys, values)
                bar.update(encoded.accepted)
            else:
                for key, value, at in zip(keys, values, encoded.event_seconds):
                    if value is None:
                        continue
                    pacer.wait_for(float(at))
                    publisher.publish(key, value)
                    publisher.poll()
                    summary.rows_read += 1
                    bar.update(1)
            if bar.total is None:
                bar.total = _estimated_rows(path, item.bytes_seen, summary.rows_read, options.limit)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: flushing what was read so far")
    finally:
        bar.close()
        publisher.flush()
        summary.seconds = time.perf_counter() - started
        summary.published = publisher.delivered(publisher.clicks_topic)
        summary.dead_lettered = publisher.delivered(publisher.dlq_topic)
    return summary
