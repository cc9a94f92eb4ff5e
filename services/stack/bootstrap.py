"""`clickrec up`: the native stack plus a first dataset, so a newcomer's first call answers.

1. bring every native service up (idempotent, see `native.up`);
2. start the project's own processes (`APPS`: the streaming job, the API) and
   wait for their health checks;
3. when the clicks topic is empty and DEMO_DATA is on, generate a small
   synthetic dataset and replay it with `--rebase-time now`;
4. when a batch artifact has no version yet, wait for the lake to hold the
   topic's events and run `clickrec train all --only-missing` (candidates,
   ranker, purchase model, analytics), so the first recommendation comes from
   the reranker;
5. return a report: what runs where (with the API's URL), and the next commands to try.
"""

from __future__ import annotations

import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from feature_store.settings import Settings
from producer.publisher import Publisher
from producer.replay import ReplayOptions, replay
from producer.synth import SynthConfig, write_synthetic_csv
from producer.topics import topic_partitions
from services.stack import native
from services.stack.cli import format_table
from services.stack.native import StackError
from services.stack.processes import ProcessState, Supervisor

__all__ = ["StackError", "seed_if_empty", "topic_message_count", "up"]

log = logging.getLogger(__name__)


def topic_message_count(settings: Settings, topic: str) -> int:
    """Roughly how many messages `topic` holds (0 exactly when it is empty)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "clickrec-status"})
    try:
        total = 0
        for partition in topic_partitions(settings.kafka_bootstrap, topic):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += max(0, high - low)
        return total
    finally:
        consumer.close()


def demo_csv(settings: Settings) -> Path:
    return settings.data_dir / "demo" / f"clicks-{settings.demo_users}u-{settings.demo_days}d.csv"


def seed_demo_data(settings: Settings) -> str:
    """Generate (once) and replay the demo dataset; returns a one-line account."""
    path = demo_csv(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("generating demo data: %d users over %d days -> %s", settings.demo_users, settings.demo_days, path)
        write_synthetic_csv(path, SynthConfig(users=settings.demo_users, days=settings.demo_days))
    publisher = Publisher.from_settings(settings)
    summary = replay(path, publisher, ReplayOptions(rebase_time="now"))
    return f"demo data: replayed {summary.published:,} events from {path} ({summary.rate:,.0f} events/s)"


def seed_if_empty(settings: Settings) -> str:
    """Seed the demo dataset when the clicks topic is empty and DEMO_DATA is on; say what happened."""
    held = topic_message_count(settings, settings.clicks_topic)
    if held:
        return f"{settings.clicks_topic} already holds events (about {held:,}): no demo data added"
    if not settings.demo_data:
        return "the stack is empty (DEMO_DATA=false): replay a file to fill it"
    return seed_demo_data(settings)


def wait_for_lake(settings: Settings, timeout: float = 600.0) -> int:
    """Wait until the lake holds (about) every event of the clicks topic; returns the lake's rows."""
    from feature_store.lake import Lake

    wanted = topic_message_count(settings, settings.clicks_topic)
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = Lake(settings.lake_url, settings).read().num_rows
        except (FileNotFoundError, OSError):  # nothing written yet
            rows = 0
        if rows >= wanted:
            return rows
        if time.monotonic() > deadline:
            raise StackError(f"the lake holds {rows:,} of {wanted:,} events after {timeout:.0f} s; "
                             f"is the streaming job running? see {Path(settings.run_dir) / 'stream.log'}")  # fmt: skip
        time.sleep(1.0)  # polling the lake, with a deadline


def train_if_missing(settings: Settings) -> str:
    """Run the batch jobs whose artifact has no version yet (a fresh stack), from the lake."""
    import subprocess

    from spark_jobs.pipeline import missing_steps

    missing = missing_steps(settings)
    if not missing:
        return "artifacts: every batch job has a version (retrain with `clickrec train all`)"
    rows = wait_for_lake(settings)
    log.info("training %s on %d events from the lake (a few minutes on the demo data)", ", ".join(missing), rows)
    done = subprocess.run([str(Path(sys.executable).parent / "clickrec"), "train", "all", "--only-missing"], check=False)
    if done.returncode:
        return "artifacts: some batch jobs failed (see above); the API answers from its fallbacks"
    return f"artifacts: trained {', '.join(missing)} on {rows:,} events from the lake"


def example_user(settings: Settings) -> str | None:
    """A user with a profile in the online store (one the ranker knows), for the report's examples."""
    from feature_store.definitions import USER_PROFILE
    from feature_store.online import OnlineStore

    try:
        found = OnlineStore.from_url(settings.redis_url).some_entities(USER_PROFILE)
    except Exception:  # Redis not answering: no example
        return None
    return found[0] if found else None


def stream_healthy(settings: Settings) -> bool:
    """The streaming job beats its heart in Redis (see spark_jobs.stream.run)."""
    from feature_store.online import OnlineStore

    try:
        beat = OnlineStore.from_url(settings.redis_url).heartbeat("stream")
    except Exception:  # Redis not answering: not healthy
        return False
    return beat is not None and time.time() - beat < 15


def api_url(settings: Settings) -> str:
    """Where the API answers (a wildcard bind is reached on 127.0.0.1)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    return f"http://{host}:{settings.api_port}"


def api_healthy(settings: Settings) -> bool:
    """The API answers GET /health."""
    try:
        with urllib.request.urlopen(api_url(settings) + "/health", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class App:
    """One of the project's own long-running processes: its `clickrec` subcommand and health check."""

    name: str
    command: tuple[str, ...]
    endpoint: Callable[[Settings], str]
    healthy: Callable[[Settings], bool]
    what: str  # for messages: "the streaming job"


#: The project's own long-running processes, started after the infrastructure, in this order.
APPS: tuple[App, ...] = (
    App("stream", ("stream",), lambda s: "Spark local[*]", stream_healthy, "the streaming job"),
    App("api", ("api",), api_url, api_healthy, "the API"),
)


def _start_app(app: App, settings: Settings, supervisor: Supervisor, timeout: float) -> native.ServiceStatus:
    current = supervisor.state(app.name)
    action = "already running"
    if current.state is not ProcessState.RUNNING:
        if current.state is ProcessState.CRASHED:
            supervisor.stop(app.name)
        supervisor.start(app.name, [str(Path(sys.executable).parent / "clickrec"), *app.command], cwd=settings.run_dir)
        action = "started"
    deadline = time.monotonic() + timeout
    while not app.healthy(settings):
        if supervisor.state(app.name).state is not ProcessState.RUNNING:
            raise StackError(f"{app.what} exited; see {supervisor.log_path(app.name)}")
        if time.monotonic() > deadline:
            raise StackError(f"{app.what} did not start in {timeout:.0f} s; see {supervisor.log_path(app.name)}")
        time.sleep(0.5)  # polling a health check, with a deadline
    pid = supervisor.state(app.name).pid
    return native.ServiceStatus(app.name, "running", pid, app.endpoint(settings), True, action)


def start_apps(settings: Settings, timeout: float) -> list[native.ServiceStatus]:
    """Start each app that is not running (once) and wait for its health check."""
    supervisor = Supervisor(Path(settings.run_dir))
    return [_start_app(app, settings, supervisor, timeout) for app in APPS]


def stop_apps(settings: Settings) -> list[native.ServiceStatus]:
    """Stop the apps, last started first."""
    supervisor = Supervisor(Path(settings.run_dir))
    rows = []
    for app in reversed(APPS):
        before = supervisor.stop(app.name)
        rows.append(native.ServiceStatus(app.name, "stopped", before.pid, app.endpoint(settings), False,
                                         "stopped" if before.pid else ""))  # fmt: skip
    return rows


def app_status(settings: Settings) -> list[native.ServiceStatus]:
    supervisor = Supervisor(Path(settings.run_dir))
    rows = []
    for app in APPS:
        current = supervisor.state(app.name)
        healthy = current.state is ProcessState.RUNNING and app.healthy(settings)
        rows.append(native.ServiceStatus(app.name, current.state.value, current.pid, app.endpoint(settings), healthy,
                                         detail=current.detail))  # fmt: skip
    return rows


def up(settings: Settings, timeout: float = 90.0) -> str:
    """Bring the native stack up, seed it when empty, and say what runs and what to try next."""
    statuses = native.up(settings, timeout=timeout)
    statuses += start_apps(settings, timeout=max(timeout, 120))
    seeded = seed_if_empty(settings)
    trained = train_if_missing(settings)
    url = api_url(settings)
    user = example_user(settings)
    return "\n".join(
        [
            format_table(statuses),
            "",
            seeded,
            trained,
            "",
            f"shop: {url}/   dashboard: {url}/dashboard   user lookup: {url}/lookup",
            f"API docs: {url}/docs   readiness: {url}/ready   metrics: {url}/metrics",
            "",
            "next:",
            *([f"  curl '{url}/recommendations/{user}?k=5'   # a demo shopper's recommendations"] if user else []),
            f"  curl {url}/popular?k=5         # best sellers",
            "  .venv/bin/clickrec peek                      # the newest click events in Kafka",
            "  .venv/bin/clickrec replay ../shared/data/opencdp-2019-Oct-head.csv --rebase-time now",
            "  .venv/bin/clickrec status                    # every service and job, its PID and health",
            "  make down                                    # stop everything this stack started",
        ]
    )
