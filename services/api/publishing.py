"""POST /events publishes through the replay's own `Publisher`, one request at a time.

Each request is queued and flushed before it is answered, so a 202 means the
broker acknowledged every event (acks=all). The publisher's delivery-failure
counts are cumulative (exact summaries for a replay), so after a failure this
sink starts a fresh publisher rather than reporting that old failure forever.
`message.timeout.ms` equals the request's deadline: an event the broker did
not take in time is reported failed by librdkafka, never delivered later behind
the client's back while it retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaException

from feature_store.settings import Settings
from producer.events import ClickEvent
from producer.publisher import PublishError, Publisher
from services.api.errors import BrokerUnavailable

log = logging.getLogger(__name__)


class EventSink:
    """Publishes validated events to the clicks topic, keyed by user id (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = settings.api_publish_timeout_seconds
        self._lock = threading.Lock()  # flush() waits for the whole producer: one request at a time
        self._publisher: Publisher | None = None

    def _new_publisher(self) -> Publisher:
        return Publisher.from_settings(
            self._settings, **{"message.timeout.ms": int(self._timeout * 1000), "linger.ms": 2}
        )

    def publish(self, events: Sequence[ClickEvent]) -> int:
        """Publish `events` and wait for the broker; raises `BrokerUnavailable` when it did not take them all."""
        with self._lock:
            publisher = self._publisher or self._new_publisher()
            try:
                queued = publisher.publish_many([e.kafka_key for e in events], [e.to_wire() for e in events])
                publisher.flush(self._timeout + 1.0)
            except (PublishError, KafkaException, BufferError) as error:
                self._publisher = None
                publisher.close(0)
                log.warning("POST /events: %d events not acknowledged: %s", len(events), error)
                raise BrokerUnavailable(
                    f"the broker ({self._settings.kafka_bootstrap}) did not acknowledge the events within "
                    f"{self._timeout:g} s; retry the whole request later (with the same event_id values, so "
                    f"events that did get through are not counted twice): {error}"
                ) from None
            self._publisher = publisher
            return queued

    def close(self) -> None:
        with self._lock:
            if self._publisher is not None:
                self._publisher.close(self._timeout)
                self._publisher = None
