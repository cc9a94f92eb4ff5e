"""Prometheus metrics of the API (prometheus-client), one registry per app.

Counted while serving: request latency per route template, which source
answered each recommendation, every fallback with its reason, events accepted
and rejected, artifact loads, and the age of the online features each request
read. Read at scrape time (a custom collector): the artifact versions in the
current snapshot, and from Redis the streaming job's heartbeat and the latest
micro-batch of each streaming query (lag, rows, duration, age).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from feature_store.online import OnlineStore

log = logging.getLogger(__name__)

#: The streaming job's query names (spark_jobs/stream.py `queryName`), as recorded by `OnlineStore.record_batch`.
STREAM_QUERIES: tuple[str, ...] = ("windows", "events")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_AGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


class Metrics:
    """Every metric the API records, on its own `CollectorRegistry` (two apps in one process never clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "clickrec_http_request_duration_seconds", "HTTP request latency by route template.",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.recommendations = Counter(
            "clickrec_recommendations", "Recommendation answers by the source that answered.", ["source"], registry=r
        )
        self.fallbacks = Counter(
            "clickrec_recommendation_fallbacks", "Sources skipped in the fallback chain, by reason.",
            ["source", "reason"], registry=r,
        )  # fmt: skip
        self.events_accepted = Counter("clickrec_events_accepted", "Events accepted by POST /events.", registry=r)
        self.events_rejected = Counter(
            "clickrec_events_rejected", "POST /events requests refused, by reason (validation, broker).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.artifact_loads = Counter(
            "clickrec_artifact_loads", "Artifact versions loaded or failed, by kind.", ["kind", "outcome"], registry=r
        )
        self.feature_age = Histogram(
            "clickrec_feature_age_seconds", "Age (now - _ts) of the online features requests read, by group.",
            ["group"], buckets=_AGE_BUCKETS, registry=r,
        )  # fmt: skip

    def observe_artifact_load(self, kind: str, outcome: str) -> None:
        self.artifact_loads.labels(kind=kind, outcome=outcome).inc()

    def observe_feature(self, group: str, features: dict | None, now: float) -> None:
        if features and features.get("_ts") is not None:
            self.feature_age.labels(group=group).observe(max(0.0, now - float(features["_ts"])))

    def watch(self, versions: Callable[[], dict[str, str | None]], store: Callable[[], OnlineStore]) -> None:
        """Add the scrape-time collector (artifact versions and the stream's state in Redis)."""
        self.registry.register(_ScrapeTimeCollector(versions, store))


class _ScrapeTimeCollector(Collector):
    def __init__(self, versions: Callable[[], dict[str, str | None]], store: Callable[[], OnlineStore]) -> None:
        self._versions = versions
        self._store = store

    def describe(self) -> list[Metric]:
        return []  # values come from outside at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("clickrec_artifact", "Loaded artifact version per kind.", labels=["kind"])
        loaded = GaugeMetricFamily("clickrec_artifact_loaded", "1 when a version of the kind is loaded.", labels=["kind"])
        for kind, version in self._versions().items():
            info.add_metric([kind], {"version": version or ""})
            loaded.add_metric([kind], 1.0 if version else 0.0)
        yield info
        yield loaded

        up = GaugeMetricFamily("clickrec_online_store_up", "1 when Redis answered this scrape.")
        heartbeat = GaugeMetricFamily(
            "clickrec_stream_heartbeat_age_seconds", "Seconds since the streaming job last said it is alive."
        )
        gauges = {
            "lag_s": GaugeMetricFamily("clickrec_stream_lag_seconds", "Ingest-to-write lag of the latest micro-batch.", labels=["query"]),
            "input_rows": GaugeMetricFamily("clickrec_stream_batch_rows", "Rows in the latest micro-batch.", labels=["query"]),
            "duration_s": GaugeMetricFamily("clickrec_stream_batch_duration_seconds", "Duration of the latest micro-batch.", labels=["query"]),
            "batch_id": GaugeMetricFamily("clickrec_stream_batch_id", "Id of the latest micro-batch.", labels=["query"]),
        }  # fmt: skip
        age = GaugeMetricFamily(
            "clickrec_stream_batch_age_seconds", "Seconds since the latest micro-batch was written.", labels=["query"]
        )
        now = time.time()
        try:
            store = self._store()
            beat = store.heartbeat("stream")
            stats = {query: store.stream_stats(query) for query in STREAM_QUERIES}
        except (redis.RedisError, AttributeError) as error:  # AttributeError: no store opened yet
            log.debug("metrics: Redis unavailable: %s", error)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        if beat is not None:
            heartbeat.add_metric([], max(0.0, now - beat))
        for query, values in stats.items():
            for name, gauge in gauges.items():
                number = _float(values.get(name))
                if number is not None:
                    gauge.add_metric([query], number)
            written = _float(values.get("written_at"))
            if written is not None:
                age.add_metric([query], max(0.0, now - written))
        yield up
        yield heartbeat
        yield from gauges.values()
        yield age
