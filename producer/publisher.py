"""The Kafka publisher shared by the replay and the API's `POST /events`.

Events go to the clicks topic keyed by user id (a user's events stay in order in
one partition); rejected input goes to the dead-letter topic with its reason.
Every message gets a delivery report: failures are counted per topic and
`flush()` raises unless everything sent was acknowledged, so a summary built
from `stats` is exact.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from feature_store.settings import Settings

log = logging.getLogger(__name__)

#: Throughput-oriented defaults; acks=all so "published" means stored by the broker.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 200_000,
    "queue.buffering.max.kbytes": 262_144,
    # Only failures call back: per-message success callbacks cost more than the produce itself.
    "delivery.report.only.error": True,
}


class PublishError(RuntimeError):
    """Some messages were not acknowledged by the broker."""


def dead_letter(raw: str, reason: str, origin: str) -> str:
    """The JSON value of a dead letter: what came in, why it was refused, from where."""
    return json.dumps(
        {
            "reason": reason,
            "raw": raw,
            "origin": origin,
            "rejected_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
    )


class Publisher:
    """Publishes click events and dead letters, counting what the broker acknowledged."""

    def __init__(self, bootstrap: str, *, clicks_topic: str, dlq_topic: str, **config: Any) -> None:
        self.clicks_topic = clicks_topic
        self.dlq_topic = dlq_topic
        self._sent: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._errors: list[str] = []
        settings = {
            **PRODUCER_DEFAULTS,
            **config,
            "bootstrap.servers": bootstrap,
            "on_delivery": self._on_delivery,
            "logger": logging.getLogger("librdkafka"),  # into our logs, not raw stderr
        }
        self._producer = Producer(settings)

    @classmethod
    def from_settings(cls, settings: Settings, **config: Any) -> Publisher:
        """The publisher for the settings' broker, clicks topic and dead-letter topic."""
        return cls(settings.kafka_bootstrap, clicks_topic=settings.clicks_topic, dlq_topic=settings.dlq_topic, **config)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed[message.topic()] += 1
            if len(self._errors) < 10:
                self._errors.append(f"{message.topic()}: {error.str()}")
            log.debug("delivery failed: %s", error)

    def _produce(self, topic: str, value: str | bytes, key: str | None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key)
                break
            except BufferError:
                # Local queue full: let librdkafka send (and report) before queueing more.
                self._producer.poll(0.05)
        self._sent[topic] += 1

    def publish(self, key: str, value: str | bytes) -> None:
        """Queue one event for the clicks topic."""
        self._produce(self.clicks_topic, value, key)

    def publish_many(self, keys: list[str | None], values: list[str | None]) -> int:
        """Queue the non-None values of a batch, in order; returns how many were queued."""
        produce, topic, queued = self._producer.produce, self.clicks_topic, 0
        for key, value in zip(keys, values):
            if value is None:
                continue
            try:
                produce(topic, value, key)
            except BufferError:
                self._producer.poll(0.05)
                self._produce(topic, value, key)
                continue
            queued += 1
        self._sent[topic] += queued
        self._producer.poll(0)
        return queued

    def reject(self, raw: str, reason: str, origin: str) -> None:
        """Queue a dead letter for input that is not a valid event."""
        self._produce(self.dlq_topic, dead_letter(raw, reason, origin), None)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every delivery report; raise `PublishError` if any message was lost."""
        pending = self._producer.flush(timeout)
        if pending:
            raise PublishError(f"{pending} messages still unacknowledged after {timeout:.0f} s; is the broker up?")
        if sum(self._failed.values()):
            raise PublishError(f"{sum(self._failed.values())} messages failed: " + "; ".join(self._errors))

    def delivered(self, topic: str) -> int:
        """Messages of `topic` acknowledged so far (exact after `flush`)."""
        return self._sent[topic] - self._failed[topic] - len(self._producer)

    def failed(self, topic: str) -> int:
        return self._failed[topic]

    def close(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)
