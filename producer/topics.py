"""Kafka topic helpers shared by the stack runner, the replay, `clickrec peek` and tests.

`read_topic` reads a topic to its *true* end: some brokers (tansu, see
PLATFORM.md) list a high watermark short of the log end, so it fetches until
every partition reports PARTITION_EOF instead of stopping at the listed end.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicRecord:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


def _client_config(bootstrap: str) -> dict[str, object]:
    # librdkafka logs through Python logging instead of writing to stderr.
    return {"bootstrap.servers": bootstrap, "logger": logging.getLogger("librdkafka")}


def ensure_topics(bootstrap: str, topics: Mapping[str, int], timeout: float = 15.0) -> list[str]:
    """Create each missing topic ``name -> partitions``; return the names created.

    Topics that already exist are left as they are (their partition count is not
    changed). Raises KafkaException when the broker refuses or does not answer.
    """
    admin = AdminClient(_client_config(bootstrap))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items() if name not in existing
    ]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                raise
    return created


def topic_partitions(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic``; raises KafkaException if it does not exist."""
    admin = AdminClient(_client_config(bootstrap))
    meta = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        error = meta.error if meta is not None and meta.error else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        raise KafkaException(error)
    return sorted(meta.partitions)


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[TopicRecord]:
    """Every record of ``topic`` from the beginning to its true end, ordered by (partition, offset).

    Uses manual assignment (no consumer group, nothing committed). Raises
    TimeoutError when some partition has not reached its end within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    partitions = topic_partitions(bootstrap, topic, timeout=timeout)
    consumer = Consumer(
        {
            **_client_config(bootstrap),
            "group.id": f"clickrec-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    records: list[TopicRecord] = []
    at_end: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        while len(at_end) < len(partitions):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"topic {topic}: partitions {sorted(set(partitions) - at_end)} did not reach their end "
                    f"within {timeout} s ({len(records)} records read)"
                )
            for msg in consumer.consume(num_messages=10_000, timeout=min(left, 0.5)):
                err = msg.error()
                if err is None:
                    ts_type, ts = msg.timestamp()
                    timestamp = ts if ts_type != TIMESTAMP_NOT_AVAILABLE else None
                    records.append(TopicRecord(topic, msg.partition(), msg.offset(), msg.key(), msg.value(), timestamp))
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    raise KafkaException(err)
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records
