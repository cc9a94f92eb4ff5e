"""Streaming benchmarks: Kafka -> Spark -> Redis throughput on a backlog, and freshness under live load.

Starts a private native stack (broker, Redis, S3 endpoint) on free ports, then:

- throughput: replays a synthetic file of at least 2M events (rebased to now),
  starts `clickrec stream`'s queries, and times how long both take to process the
  whole backlog (JVM start excluded; first batch included);
- freshness: with the stream running (1 s trigger), publishes live events at a
  steady rate (default 2,000/s) for a while; every 200th is a probe from a fresh
  user on a fresh product, and a poller measures, for each probe, produce ->
  readable in Redis twice: the user's current two-minute window (the first group
  a micro-batch writes) and the product's daily counters (the last one: every
  feature of the event has landed); p50 / p95 / max of each.

    .venv/bin/python -m bench.stream                 # both, recorded in bench/results/stream.json
    .venv/bin/python -m bench.stream --rows 500000 --live-seconds 20 --no-record
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.machine import machine
from feature_store.definitions import GROUPS, USER_2M
from feature_store.online import OnlineStore
from feature_store.settings import PROJECT_ROOT, Settings
from producer.events import ClickEvent, EventSource, EventType
from producer.publisher import Publisher
from producer.replay import ReplayOptions, replay
from producer.topics import ensure_topics
from services.stack import native
from spark_jobs import stream
from spark_jobs.session import spark_session
from tests.services import native_settings

log = logging.getLogger("bench.stream")
RESULTS = PROJECT_ROOT / "bench" / "results" / "stream.json"


def synthetic_backlog(rows: int) -> Path:
    from bench.replay_throughput import synthetic_file

    return synthetic_file(rows, PROJECT_ROOT / "data" / "bench")


def batch_profile(query) -> dict:
    """Medians over the query's micro-batches (Spark's own timings, ms) and their count."""
    progress = [p for p in query.recentProgress if p["numInputRows"]]
    steps = ("triggerExecution", "latestOffset", "queryPlanning", "walCommit", "addBatch", "commitOffsets")
    return {
        "batches": len(progress),
        "median_rows": statistics.median(p["numInputRows"] for p in progress) if progress else 0,
        **{f"median_{step}_ms": statistics.median(p["durationMs"].get(step, 0) for p in progress) if progress else None
           for step in steps},
    }  # fmt: skip


def throughput(spark, settings: Settings, rows: int) -> dict:
    publisher = Publisher.from_settings(settings)
    summary = replay(synthetic_backlog(rows), publisher, ReplayOptions(limit=rows, rebase_time="now", progress=False))
    started = time.perf_counter()
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=1.0))
    stream.run_to_end(queries)
    seconds = time.perf_counter() - started
    return {"events": summary.published, "seconds": round(seconds, 1), "events_per_s": round(summary.published / seconds),
            **batch_profile(queries[0])}  # fmt: skip


#: The groups a probe waits for: the first a micro-batch writes and the last (see `GROUPS`).
FIRST_GROUP, LAST_GROUP = GROUPS[0], GROUPS[-1]
assert FIRST_GROUP is USER_2M and LAST_GROUP.entity.name == "product", "the probe reads a user's first, its product's last"
#: Probe products: one per probe, outside the live events' pool of 5,000.
PROBE_PRODUCTS = 5_000_000


def _probe_event(user_id: int, serial: int, product_id: int | None = None) -> ClickEvent:
    return ClickEvent(
        event_time=datetime.now(timezone.utc), event_type=EventType.VIEW,
        product_id=1_000_000 + serial % 5_000 if product_id is None else product_id,
        category_id=2053013555631882655, category_code="electronics.smartphone", brand="bench", price=99.0,
        user_id=user_id, user_session=f"bench-{user_id}", source=EventSource.LIVE,
    )  # fmt: skip


def latency_summary(latencies: list[float]) -> dict:
    """p50 / p95 / max of some latencies in seconds (None when there are none)."""
    ordered = sorted(latencies)
    if not ordered:
        return {"p50_s": None, "p95_s": None, "max_s": None}
    return {
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "max_s": round(ordered[-1], 3),
    }


def freshness(spark, settings: Settings, rate: int, seconds: float) -> dict:
    store = OnlineStore.from_url(settings.redis_url)
    publisher = Publisher.from_settings(settings, **{"linger.ms": 5})  # fmt: skip
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=1.0))
    pending: dict[int, tuple[float, int, bool]] = {}  # user -> (sent, product, user window seen)
    first: list[float] = []  # produce -> the user's window readable
    last: list[float] = []  # produce -> the product's daily counters readable (every group written)
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() or pending:
            with lock:
                probes = list(pending.items())
            if probes:
                users = store.read_many(FIRST_GROUP, [u for u, _ in probes])
                products = store.read_many(LAST_GROUP, [p for _, (_, p, _) in probes])
                now = time.perf_counter()
                with lock:
                    for (user, (sent, product, seen)), user_row, product_row in zip(probes, users, products):
                        if user_row is not None and not seen:
                            first.append(now - sent)
                            pending[user] = (sent, product, True)
                        if product_row is not None:
                            last.append(now - sent)
                            if user_row is None and not seen:  # both landed between two polls
                                first.append(now - sent)
                            pending.pop(user, None)
                        elif now - sent > 60:
                            pending.pop(user, None)  # lost: counted below
            time.sleep(0.01)  # the poller's own cadence (a measurement loop, not synchronisation)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        # Warm up: the first micro-batches pay for JVM and Python worker start.
        warm_until = time.monotonic() + 20
        serial = 0
        while time.monotonic() < warm_until:
            publisher.publish(str(900_000_000 + serial), _probe_event(900_000_000 + serial, serial).to_wire())
            serial += 1
            time.sleep(1 / rate)
        publisher.flush()
        poller.start()
        start = time.perf_counter()
        sent = probes = 0
        while time.perf_counter() - start < seconds:
            due = int((time.perf_counter() - start) * rate)
            while sent < due:
                user = 800_000_000 + sent
                if sent % 200 == 0:
                    event = _probe_event(user, sent, PROBE_PRODUCTS + sent)
                    with lock:
                        pending[user] = (time.perf_counter(), event.product_id, False)
                    probes += 1
                else:
                    event = _probe_event(user, sent)
                publisher.publish(str(user), event.to_wire())
                sent += 1
            publisher.poll()
            time.sleep(0.002)
        publisher.flush()
        done.set()
        poller.join(timeout=90)
    finally:
        for query in queries:
            query.stop()
    profile = batch_profile(queries[0])
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "events": sent,
        "probes": probes,
        "probes_seen": len(first),
        # the user's window, the first group written: comparable with the recordings before both were timed
        **latency_summary(first),
        "probes_fully_written": len(last),
        "every_group": latency_summary(last),
        **profile,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="backlog size for the throughput run")
    parser.add_argument("--rate", type=int, default=2_000, help="live events per second for the freshness run")
    parser.add_argument("--live-seconds", type=float, default=60, help="length of the freshness run")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) still runs the `finally` blocks that stop the private stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="clickrec-bench-stream-") as tmp:
        settings = native_settings(Path(tmp))
        native.up(settings)
        spark = spark_session("clickrec-bench", settings)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            results = {}
            for name in ("throughput", "freshness"):
                run = settings.model_copy(
                    update={"clicks_topic": f"bench-{name}", "dlq_topic": f"bench-{name}.dlq",
                            "checkpoint_dir": Path(tmp) / f"checkpoints-{name}"}
                )  # fmt: skip
                ensure_topics(run.kafka_bootstrap, {run.clicks_topic: 3, run.dlq_topic: 1})
                if name == "throughput":
                    results[name] = throughput(spark, run, args.rows)
                else:
                    results[name] = freshness(spark, run, args.rate, args.live_seconds)
                log.info("%s: %s", name, results[name])
        finally:
            spark.stop()
            native.down(settings)
    record = {
        "benchmark": "clickrec stream: Kafka (native broker) -> Spark local[*] -> Redis and the lake, one query",
        "command": ".venv/bin/python -m bench.stream",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        **results,
    }
    print(json.dumps(record, indent=2))
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
