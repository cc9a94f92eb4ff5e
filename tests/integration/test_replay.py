"""Replay against the real broker: exactly once, keyed by user, bad rows in the DLQ with reasons."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from feature_store.settings import Settings
from producer.publisher import Publisher
from producer.replay import ReplayOptions, replay
from producer.topics import ensure_topics, read_topic
from tests.services import unique_topic_name

pytestmark = pytest.mark.integration

from tests.builders import SAMPLE, needs_sample


@pytest.fixture
def topics(stack: Settings, request: pytest.FixtureRequest) -> Settings:
    """Settings with a fresh clicks topic (3 partitions) and DLQ for this test."""
    settings = stack.model_copy(
        update={
            "clicks_topic": unique_topic_name(request.node.name),
            "dlq_topic": unique_topic_name(request.node.name + ".dlq"),
        }
    )
    ensure_topics(settings.kafka_bootstrap, {settings.clicks_topic: 3, settings.dlq_topic: 1})
    return settings


def _publisher(settings: Settings) -> Publisher:
    return Publisher.from_settings(settings)


def _cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a `clickrec` child process aimed at this test's broker and topics."""
    return {
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CLICKS_TOPIC": settings.clicks_topic,
        "DLQ_TOPIC": settings.dlq_topic,
        "PATH": str(Path(sys.executable).parent),
    }


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@needs_sample
def test_real_sample_lands_exactly_once_under_each_users_key(topics: Settings) -> None:
    expected = _csv_rows(SAMPLE)
    assert len(expected) == 17_434

    summary = replay(SAMPLE, _publisher(topics), ReplayOptions(progress=False))

    assert (summary.rows_read, summary.published, summary.rejected) == (17_434, 17_434, 0)
    records = read_topic(topics.kafka_bootstrap, topics.clicks_topic, timeout=60)
    assert len(records) == 17_434
    assert read_topic(topics.kafka_bootstrap, topics.dlq_topic, timeout=30) == []

    events = [json.loads(r.value) for r in records]
    for record, event in zip(records, events):
        assert record.key.decode() == str(event["user_id"])
    # Every CSV row exactly once: compare the multisets of (user, product, type, time, session).
    def row_key(user, product, kind, session) -> tuple:
        return (int(user), int(product), kind, session)

    got = Counter(row_key(e["user_id"], e["product_id"], e["event_type"], e["user_session"]) for e in events)
    want = Counter(row_key(r["user_id"], r["product_id"], r["event_type"], r["user_session"]) for r in expected)
    assert got == want
    # A user's events share a partition and keep the file's order there.
    partitions_of_user: dict[int, set[int]] = {}
    for record, event in zip(records, events):
        partitions_of_user.setdefault(event["user_id"], set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_of_user.values())
    last_seen: dict[int, str] = {}
    for event in events:  # records are ordered by (partition, offset)
        assert event["event_time"] >= last_seen.get(event["user_id"], "")
        last_seen[event["user_id"]] = event["event_time"]


@needs_sample
def test_a_second_replay_repeats_the_same_event_ids(topics: Settings) -> None:
    replay(SAMPLE, _publisher(topics), ReplayOptions(progress=False, limit=500))
    replay(SAMPLE, _publisher(topics), ReplayOptions(progress=False, limit=500, rebase_time="now"))
    events = [json.loads(r.value) for r in read_topic(topics.kafka_bootstrap, topics.clicks_topic, timeout=30)]
    ids = Counter(e["event_id"] for e in events)
    assert len(events) == 1_000
    assert all(count % 2 == 0 for count in ids.values())  # every id came twice (identical rows share one)


BAD_ROWS = {
    "missing fields": "2019-10-01 00:00:05 UTC,view,1004237,2053013555631882655,,apple",
    "bad timestamp": "2019-13-45 99:00:00 UTC,view,1004237,2053013555631882655,,apple,10.00,512345678,s-1",
    "negative price": "2019-10-01 00:00:06 UTC,view,1004237,2053013555631882655,,apple,-3.50,512345678,s-1",
    "unknown event type": "2019-10-01 00:00:07 UTC,teleport,1004237,2053013555631882655,,apple,10.00,512345678,s-1",
}
TRUNCATED_LAST = "2019-10-01 00:00:09 UTC,cart,1004237,20530135"
EXPECTED_REASON = {
    "missing fields": "expected 9 columns, got 6",
    "bad timestamp": "event_time",
    "negative price": "price",
    "unknown event type": "event_type",
}


@needs_sample
def test_bad_rows_go_to_the_dlq_with_reasons_and_good_rows_to_clicks(topics: Settings, tmp_path: Path) -> None:
    lines = SAMPLE.read_text().splitlines()
    header, good = lines[0], lines[1:2001]
    injected = list(good)
    for offset, raw in enumerate(BAD_ROWS.values()):
        injected.insert(300 * (offset + 1), raw)
    path = tmp_path / "with-bad-rows.csv"
    path.write_text("\n".join([header, *injected, TRUNCATED_LAST]))  # no newline: a truncated last line

    summary = replay(path, _publisher(topics), ReplayOptions(progress=False))

    assert summary.rows_read == summary.published + summary.rejected == len(good) + len(BAD_ROWS) + 1
    assert (summary.published, summary.rejected, summary.dead_lettered) == (len(good), len(BAD_ROWS) + 1, 5)
    clicks = read_topic(topics.kafka_bootstrap, topics.clicks_topic, timeout=30)
    assert len(clicks) == len(good)
    letters = [json.loads(r.value) for r in read_topic(topics.kafka_bootstrap, topics.dlq_topic, timeout=30)]
    by_raw = {letter["raw"]: letter for letter in letters}
    assert set(by_raw) == {*BAD_ROWS.values(), TRUNCATED_LAST}
    for name, raw in BAD_ROWS.items():
        assert EXPECTED_REASON[name] in by_raw[raw]["reason"], (name, by_raw[raw]["reason"])
        assert by_raw[raw]["origin"] == path.name
    assert "expected 9 columns, got 4" in by_raw[TRUNCATED_LAST]["reason"]


def test_cli_replay_prints_a_summary_that_adds_up(topics: Settings, tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\r\n"
        "2019-10-01 00:00:00 UTC,view,1,2053013555631882655,electronics.smartphone,apple,10.00,500000001,a\r\n"
        "2019-10-01 00:00:01 UTC,cart,1,2053013555631882655,electronics.smartphone,apple,10.00,500000001,a\r\n"
        "2019-10-01 00:00:02 UTC,view,x,2053013555631882655,,,10.00,500000002,b\r\n"
    )
    env = _cli_env(topics)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "clickrec"), "replay", str(path), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"^rows read\s+3$", result.stdout, re.M), result.stdout
    assert re.search(r"^published\s+2$", result.stdout, re.M), result.stdout
    assert re.search(r"^rejected \(DLQ\)\s+1\b", result.stdout, re.M), result.stdout
    assert len(read_topic(topics.kafka_bootstrap, topics.clicks_topic, timeout=30)) == 2


def test_ctrl_c_flushes_what_was_read_and_prints_a_summary(topics: Settings, tmp_path: Path) -> None:
    path = tmp_path / "slow.csv"
    rows = [
        f"2019-10-01 00:{m:02d}:{s:02d} UTC,view,{1000 + i},2053013555631882655,,,10.00,5000000{i % 10},s{i % 10}"
        for i, (m, s) in enumerate((i // 60, i % 60) for i in range(300))
    ]
    path.write_text("\n".join(rows) + "\n")
    env = _cli_env(topics)
    # One event a second: the replay is still going when it is interrupted.
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "clickrec"), "replay", str(path), "--speedup", "1", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(read_topic(topics.kafka_bootstrap, topics.clicks_topic, timeout=30)) < 2:
        assert time.monotonic() < deadline and process.poll() is None, "the replay published nothing"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr
    assert "interrupted" in stdout
    published = int(re.search(r"^published\s+([\d,]+)", stdout, re.M).group(1).replace(",", ""))
    read = int(re.search(r"^rows read\s+([\d,]+)", stdout, re.M).group(1).replace(",", ""))
    assert 2 <= published == read < 300
    assert len(read_topic(topics.kafka_bootstrap, topics.clicks_topic, timeout=30)) == published
