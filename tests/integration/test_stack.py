"""The native stack runner against real tansu, redis-server and moto on free ports."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from typer.testing import CliRunner

from feature_store.settings import Settings
from producer.topics import ensure_topics, read_topic, topic_partitions
from services.stack import cli, native
from services.stack.processes import pid_alive, wait_for
from tests.services import native_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """A private native stack's settings (not started); whatever was started is stopped after."""
    s = native_settings(tmp_path)
    yield s
    native.down(s)


def pids(rows: list[native.ServiceStatus]) -> dict[str, int | None]:
    return {r.name: r.pid for r in rows}


def test_up_brings_every_service_up_healthy_with_topics_and_bucket(settings: Settings) -> None:
    rows = native.up(settings)

    assert [r.name for r in rows] == ["broker", "redis", "s3"]
    assert all(r.state == "running" and r.healthy and r.action == "started" for r in rows)
    assert all(pid_alive(pid) for pid in pids(rows).values() if pid)
    assert len(topic_partitions(settings.kafka_bootstrap, settings.clicks_topic)) == settings.topic_partitions
    assert topic_partitions(settings.kafka_bootstrap, settings.dlq_topic) == [0]
    assert native.s3_client(settings).bucket_exists(settings.s3_bucket)
    assert redis.Redis.from_url(settings.redis_url).ping()
    assert all(r.state == "running" and r.healthy for r in native.status(settings))


def test_up_twice_starts_nothing_twice(settings: Settings) -> None:
    first = native.up(settings)
    second = native.up(settings)

    assert pids(second) == pids(first)
    assert all(r.action == "already running" and r.healthy for r in second)


def test_down_stops_exactly_its_processes(settings: Settings) -> None:
    started = pids(native.up(settings))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        rows = native.down(settings)

        assert pids(rows) == started
        assert all(not pid_alive(pid) for pid in started.values() if pid)
        assert bystander.poll() is None, "down touched a process it did not start"
        assert all(r.state == "stopped" and r.pid is None for r in native.status(settings))
        assert not list((Path(settings.run_dir) / "pids").glob("*.pid"))
    finally:
        bystander.kill()
        bystander.wait()


def test_killed_service_is_reported_crashed_and_restarted_by_up(settings: Settings) -> None:
    before = pids(native.up(settings))
    os.kill(before["redis"], signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(before["redis"]), timeout=10)

    crashed = {r.name: r for r in native.status(settings)}["redis"]
    assert crashed.state == "crashed" and not crashed.healthy
    assert "redis.log" in crashed.detail

    rows = {r.name: r for r in native.up(settings)}
    assert rows["redis"].action == "restarted" and rows["redis"].healthy
    assert rows["redis"].pid != before["redis"]
    assert rows["broker"].pid == before["broker"] and rows["s3"].pid == before["s3"]


def test_cli_status_exits_non_zero_when_a_service_crashed(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    runner = CliRunner()
    assert runner.invoke(cli.stack_app, ["up"]).exit_code == 0
    ok = runner.invoke(cli.stack_app, ["status"])
    assert ok.exit_code == 0 and "broker" in ok.output and settings.kafka_bootstrap in ok.output

    os.kill(native.status(settings)[0].pid, signal.SIGKILL)
    assert wait_for(lambda: native.status(settings)[0].state == "crashed", timeout=10)
    crashed = runner.invoke(cli.stack_app, ["status"])
    assert crashed.exit_code == 1 and "crashed" in crashed.output


def test_port_taken_by_a_foreign_process_is_a_clear_error(settings: Settings) -> None:
    host, port = settings.kafka_host, settings.kafka_port
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        with pytest.raises(native.StackError, match=f"broker: {host}:{port} is already in use"):
            native.up(settings)


def test_unhealthy_service_times_out_naming_it_and_its_log(settings: Settings, monkeypatch) -> None:
    never = [dataclasses.replace(svc, healthy=lambda s: False) if svc.name == "s3" else svc for svc in native.SERVICES]
    monkeypatch.setattr(native, "SERVICES", tuple(never))
    with pytest.raises(native.StackError, match=r"s3 did not become healthy .* see its log .*s3\.log"):
        native.up(settings, timeout=1)


def test_missing_binary_says_how_to_install_it_and_starts_nothing(settings: Settings, monkeypatch) -> None:
    without_redis = [dataclasses.replace(svc, find=lambda: None) if svc.name == "redis" else svc for svc in native.SERVICES]
    monkeypatch.setattr(native, "SERVICES", tuple(without_redis))
    with pytest.raises(native.StackError, match=r"redis: not installed; .*apt-get install -y redis-server"):
        native.up(settings)
    assert all(r.state == "stopped" for r in native.status(settings))


def test_read_topic_reads_to_the_true_end(kafka_bootstrap: str, unique_topic: str) -> None:
    ensure_topics(kafka_bootstrap, {unique_topic: 3})
    assert ensure_topics(kafka_bootstrap, {unique_topic: 3}) == []  # idempotent
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(2_500)}
    for key, value in sent.items():
        producer.produce(unique_topic, key=key, value=value)
    assert producer.flush(15) == 0

    records = read_topic(kafka_bootstrap, unique_topic, timeout=30)

    assert {r.key: r.value for r in records} == sent
    assert len(records) == len(sent)
    assert {r.partition for r in records} == {0, 1, 2}
