"""The streaming job against the real broker and Redis: online equals offline, restarts lose nothing."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from pyspark.sql import functions as F

from feature_store.definitions import GROUPS, FeatureGroup, Window
from feature_store.lake import Lake
from feature_store.online import (
    SESSION_EVENT_FIELDS,
    SESSION_EVENTS_KEPT,
    OnlineStore,
    decode_features,
    session_keys,
    window_key,
)
from feature_store.settings import Settings
from producer.publisher import Publisher
from producer.replay import ReplayOptions, replay
from producer.topics import ensure_topics, read_topic
from spark_jobs import stream
from spark_jobs.features import batch_features, batch_session_events
from tests.services import private_redis, unique_topic_name

pytestmark = pytest.mark.integration

from tests.builders import SAMPLE, needs_sample


@pytest.fixture
def settings(stack: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    topic = unique_topic_name(request.node.name)
    configured = stack.model_copy(
        update={
            "clicks_topic": topic,
            "dlq_topic": topic + ".dlq",
            "checkpoint_dir": tmp_path / "checkpoints",
            "lake_url": f"file://{tmp_path / 'lake'}",
            "online_backfill_seconds": 7 * 24 * 3600,  # keep every window of the sample, not only live ones
        }
    )
    ensure_topics(configured.kafka_bootstrap, {configured.clicks_topic: 3, configured.dlq_topic: 1})
    redis.Redis.from_url(configured.redis_url).flushdb()
    return configured


def _replay(settings: Settings, **options) -> None:
    publisher = Publisher.from_settings(settings)
    replay(SAMPLE, publisher, ReplayOptions(progress=False, rebase_time="now", **options))


def _same(expected, got) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        return expected is not None and got is not None and math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-6)
    return expected == got


def _online(store: OnlineStore, group: FeatureGroup, rows: list[dict]) -> list[dict | None]:
    """What Redis holds for each expected row: sliding windows through the reader the API uses
    (`read_many` at a time inside the window's last slide), the others straight from their hash."""
    if group.window is Window.SLIDING:
        by_end: dict[float, list[int]] = {}
        for i, row in enumerate(rows):
            by_end.setdefault(row["window_end"].timestamp(), []).append(i)
        found: list[dict | None] = [None] * len(rows)
        for end, indices in by_end.items():
            at = end - group.slide.total_seconds() / 2
            for i, features in zip(indices, store.read_many(group, [rows[i]["entity_id"] for i in indices], at)):
                found[i] = features
        return found
    keys = [
        session_keys(row["entity_id"])[0] if group.window is Window.SESSION else window_key(group, row["entity_id"], row["window_start"])
        for row in rows
    ]
    with store.client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        return [decode_features(group, mapping) if mapping else None for mapping in pipe.execute()]


def assert_online_equals_offline(spark, settings: Settings) -> dict[str, int]:
    """Every entity (and window) of every group: Redis holds exactly the batch recomputation."""
    events = spark.createDataFrame(Lake(settings.lake_url, settings).read().to_pandas())
    store = OnlineStore.from_url(settings.redis_url)
    checked = {}
    for group in GROUPS:
        expected = [r.asDict() for r in batch_features(events, group).collect()]
        assert expected, group.name
        mismatches = []
        for row, online in zip(expected, _online(store, group, expected)):
            if online is None:
                mismatches.append((row["entity_id"], "missing"))
                continue
            for name in group.names:
                want = row[name]
                if hasattr(want, "timestamp"):
                    want = want.timestamp()
                if not _same(want, online[name]):
                    mismatches.append((row["entity_id"], name, want, online[name]))
        assert not mismatches, f"{group.name}: {len(mismatches)} of {len(expected)} differ, e.g. {mismatches[:5]}"
        checked[group.name] = len(expected)
    return checked


def assert_session_events_equal_offline(spark, settings: Settings) -> int:
    """Every session's raw events in Redis: exactly the latest SESSION_EVENTS_KEPT of the lake's, oldest first."""
    events = spark.createDataFrame(Lake(settings.lake_url, settings).read().to_pandas())
    expected: dict[str, list[dict]] = {}
    for row in batch_session_events(events, SESSION_EVENTS_KEPT).orderBy("user_session", F.desc("rank")).collect():
        event = {name: row[name] for name in SESSION_EVENT_FIELDS}
        event["event_time"] = event["event_time"].timestamp()
        expected.setdefault(row["user_session"], []).append(event)
    store = OnlineStore.from_url(settings.redis_url)
    mismatches = [(sid, len(want)) for sid, want in expected.items() if store.session_events(sid) != want]
    assert not mismatches, f"session events: {len(mismatches)} of {len(expected)} sessions differ, e.g. {mismatches[:5]}"
    assert store.session_events("no-such-session") == []
    return len(expected)


@needs_sample
def test_redis_holds_exactly_the_batch_recomputation(spark, settings: Settings) -> None:
    _replay(settings)
    # Records no clickrec publisher would send (another producer on the topic): dead letters.
    strangers = Publisher.from_settings(settings)
    for value in (b"not json", b'{"event_type": "view", "user_id": 1}'):
        strangers.publish("stranger", value)
    strangers.flush()
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=0.5))
    stream.run_to_end(queries)
    letters = [json.loads(r.value) for r in read_topic(settings.kafka_bootstrap, settings.dlq_topic, timeout=30)]
    assert sorted(letter["raw"] for letter in letters) == ["not json", '{"event_type": "view", "user_id": 1}']
    assert all(letter["reason"].startswith("not a click event") for letter in letters)
    assert all(letter["origin"].startswith(settings.clicks_topic + "/") for letter in letters)
    assert "missing event_time" in next(x["reason"] for x in letters if x["raw"].startswith("{"))
    assert Lake(settings.lake_url, settings).read().num_rows > 17_000
    checked = assert_online_equals_offline(spark, settings)
    assert checked["session"] == 5_066  # every session of the sample
    assert assert_session_events_equal_offline(spark, settings) == 5_066


@needs_sample
def test_a_restart_from_the_checkpoint_loses_nothing_and_counts_nothing_twice(spark, settings: Settings) -> None:
    _replay(settings, limit=9_000)
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=0.5, max_rows_per_batch=2_000))
    # Stop in the middle of the replay: once both queries committed a batch (the rest of the file
    # is replayed only after the stop).
    deadline = time.monotonic() + 180
    while not all(q.lastProgress and q.lastProgress["numInputRows"] for q in queries):
        assert time.monotonic() < deadline, "the streaming queries processed nothing"
        queries[0].awaitTermination(0.2)
    for query in queries:
        query.stop()
    _replay(settings, skip=9_000)
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=0.5))
    stream.run_to_end(queries)
    assert_online_equals_offline(spark, settings)
    assert_session_events_equal_offline(spark, settings)


def _lake_rows(settings: Settings) -> int:
    try:
        return Lake(settings.lake_url, settings).read().num_rows
    except FileNotFoundError:  # no batch written yet
        return 0


def _poll(condition, seconds: float, what: str, supervised: Future) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if supervised.done():
            supervised.result()  # raises what ended the supervisor
            raise AssertionError(f"the stream's supervisor returned before {what}")
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        time.sleep(0.2)


@needs_sample
def test_the_stream_outlives_a_redis_outage_and_loses_nothing(spark, settings: Settings, tmp_path: Path) -> None:
    # Redis goes away (saving its data, as a restart with persistence does) while events keep
    # arriving: the batch fails, the query fails, and `supervise` starts it again until Redis is
    # back; then the events sent during the outage are in Redis and the lake, each once.
    with private_redis(tmp_path / "redis") as server:
        configured = settings.model_copy(update={"redis_url": server.settings.redis_url})
        policy = stream.RestartPolicy(max_failures=100, first_delay=0.2, max_delay=1.0)
        stop = threading.Event()
        options = stream.StreamOptions(trigger_seconds=0.5, max_rows_per_batch=2_000)
        with ThreadPoolExecutor(1) as pool:
            supervised = pool.submit(stream.supervise, spark, configured, options, stop, policy)
            try:
                _replay(configured, limit=3_000)
                store = OnlineStore.from_url(configured.redis_url)
                _poll(lambda: store.stream_stats("events"), 180, "a first batch was written", supervised)
                server.shutdown_saving()
                _replay(configured, skip=3_000)
                _poll(lambda: len(policy.failures) >= 2, 120, "the query failed and was started again", supervised)
                server.start()
                sent = {json.loads(r.value)["event_id"] for r in read_topic(configured.kafka_bootstrap, configured.clicks_topic)}
                _poll(lambda: _lake_rows(configured) >= len(sent), 180, "every event reached the lake", supervised)
                assert not supervised.done()
            finally:
                stop.set()
                supervised.result(timeout=60)
        assert _lake_rows(configured) == len(sent)
        assert_online_equals_offline(spark, configured)
        assert_session_events_equal_offline(spark, configured)
        assert store.heartbeat("stream") is not None


@needs_sample
def test_a_re_run_batch_and_events_sent_twice_count_once(spark, settings: Settings, monkeypatch) -> None:
    # Without Kafka: the sample's events (typed, as the query hands them over) in three batches.
    # Batch 1 repeats 500 events of batch 0 (published twice); batch 1 fails half-way (after
    # the windows, before the sessions) and is run again, as Spark re-runs a failed batch.
    from feature_store.lake import events_from_csv

    table = pa.concat_tables(events_from_csv(SAMPLE))
    now = time.time()
    shift = pa.scalar(int((now - 60) * 1e6) - pa.compute.max(table["event_time"]).value, pa.duration("us"))
    table = table.set_column(0, "event_time", pa.compute.add(table["event_time"], shift))
    table = table.append_column("ingest_time", pa.array([None] * table.num_rows, pa.timestamp("us", tz="UTC")))
    third = table.num_rows // 3
    batches = [table.slice(0, third), pa.concat_tables([table.slice(third, third), table.slice(0, 500)]),
               table.slice(2 * third)]  # fmt: skip
    store = OnlineStore.from_url(settings.redis_url)
    lake = Lake(settings.lake_url, settings)
    run = {"store": store, "lake": lake, "writer": "query-1", "settings": settings}

    stream.process_batch(batches[0], 0, **run)
    merge_sessions = store.merge_sessions

    def crash(*args, **kwargs):
        raise RuntimeError("the driver died here")

    monkeypatch.setattr(store, "merge_sessions", crash)
    with pytest.raises(RuntimeError):
        stream.process_batch(batches[1], 1, **run)
    monkeypatch.setattr(store, "merge_sessions", merge_sessions)
    stream.process_batch(batches[1], 1, **run)  # the re-run
    stream.process_batch(batches[1], 1, **run)  # and once more: still nothing twice
    stream.process_batch(batches[2], 2, **run)

    assert lake.read().num_rows == len(set(table["event_id"].to_pylist()))  # each event once in the lake
    checked = assert_online_equals_offline(spark, settings)
    assert checked["session"] == 5_066
    assert_session_events_equal_offline(spark, settings)
