"""`clickrec up`: the native stack plus a first dataset, so a newcomer's first call answers.

1. bring every native service up (idempotent, see `native.up`);
2. when the clicks topic is empty and DEMO_DATA is on, generate a small
   synthetic dataset and replay it with `--rebase-time now`;
3. return a report: what runs where, and the next commands to try.
"""

from __future__ import annotations

import logging
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
    publisher = Publisher(settings.kafka_bootstrap, clicks_topic=settings.clicks_topic, dlq_topic=settings.dlq_topic)
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


def up(settings: Settings, timeout: float = 90.0) -> str:
    """Bring the native stack up, seed it when empty, and say what runs and what to try next."""
    statuses = native.up(settings, timeout=timeout)
    return "\n".join(
        [
            format_table(statuses),
            "",
            seed_if_empty(settings),
            "",
            "next:",
            "  .venv/bin/clickrec peek                      # the newest click events in Kafka",
            "  .venv/bin/clickrec replay ../shared/data/opencdp-2019-Oct-head.csv --rebase-time now",
            "  .venv/bin/clickrec stack status              # every service, its PID and health",
            "  make down                                    # stop everything this stack started",
        ]
    )
