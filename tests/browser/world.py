"""What the browser tests serve: real artifacts on small synthetic data, a stream stand-in, a real uvicorn.

- candidates and the purchase model come from the real jobs (`tests.api_data` builders);
- analytics: the real Spark job costs about 80 s on this data (JVM start and twelve
  queries), too slow for these tests, so `kpi_tables` computes the same KPI tables
  (the definitions of `spark_jobs.analytics.kpis`, same columns) with pandas on the
  same synthetic events, and the job's own `publish` writes the artifact;
- `StreamStandIn.apply` plays the streaming job's part: it reads what the shop
  posted from the Kafka topic and hands it, as one micro-batch, to
  `spark_jobs.stream.process_batch`, the very function the stream's foreachBatch runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import uvicorn

from feature_store.artifacts import open_artifacts
from feature_store.lake import Lake
from feature_store.online import OnlineStore
from feature_store.settings import Settings
from producer.events import ClickEvent
from producer.schema import EVENT_SCHEMA
from producer.topics import TopicRecord, ensure_topics, read_topic
from services.api.app import create_app
from services.api.registry import CandidateSet
from tests.api_data import api_settings, publish_candidates, publish_purchase_model, synthetic_events
from tests.services import free_ports

#: The Redis db of the browser tests (the API tests use 7).
BROWSER_REDIS_DB = 8
UTC = "UTC"


def kpi_tables(events: pa.Table) -> dict[str, pa.Table]:
    """The analytics job's KPI tables (see spark_jobs.analytics.kpis for the definitions), computed with pandas."""
    df = events.to_pandas()
    df = df.drop_duplicates(["event_time", "event_type", "product_id", "user_id", "user_session", "price"])
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    buys = df[df.event_type == "purchase"]

    def funnel_at(key: str, level: str) -> dict:
        types = df.dropna(subset=[key]).groupby(key)["event_type"].agg(set)
        viewed, carted, bought = (int(types.map(lambda s, t=t: t in s).sum()) for t in ("view", "cart", "purchase"))
        return {"level": level, "entities": len(types), "viewed": viewed, "carted": carted, "purchased": bought,
                "cart_rate": carted / viewed, "purchase_rate": bought / carted, "conversion": bought / viewed}

    counts = df.groupby("event_type").size().rename("events").reset_index()
    counts["share"] = counts.events / counts.events.sum()
    carts = df[df.event_type == "cart"].groupby(["user_session", "product_id"]).agg(
        category_code=("category_code", "first"), brand=("brand", "first")).reset_index()
    bought = set(zip(buys.user_session, buys.product_id))
    carts["converted"] = [(s, p) in bought for s, p in zip(carts.user_session, carts.product_id)]

    def cart_conversion(by: str) -> pd.DataFrame:
        out = carts.dropna(subset=[by]).groupby(by).agg(carts=("converted", "size"), converted=("converted", "sum")).reset_index()
        out = out[out.carts >= 2].sort_values(["carts", by], ascending=[False, True])
        out["conversion_rate"] = out.converted / out.carts
        out["abandonment_rate"] = 1 - out.conversion_rate
        return out

    categories = buys.dropna(subset=["category_code"]).groupby("category_code").agg(
        purchases=("price", "size"), revenue=("price", "sum"), buyers=("user_id", "nunique")).reset_index()
    categories["revenue"] = categories.revenue.round(2)
    categories = categories.sort_values("revenue", ascending=False)
    categories["rank_by_purchases"] = categories.purchases.rank(ascending=False, method="first").astype(int)
    categories["rank_by_revenue"] = range(1, len(categories) + 1)
    brands = buys.dropna(subset=["category_code", "brand"]).groupby(["category_code", "brand"]).agg(
        purchases=("price", "size"), revenue=("price", "sum")).reset_index().sort_values("revenue", ascending=False)
    brands["rank"] = brands.groupby("category_code").cumcount() + 1
    brands = brands[brands["rank"] <= 5][["category_code", "rank", "brand", "purchases", "revenue"]]

    def by(bucket: pd.Series, name: str, share: bool = True, buyers: bool = False) -> pd.DataFrame:
        out = buys.groupby(bucket.rename(name)).agg(purchases=("price", "size"), revenue=("price", "sum"),
                                                     **({"buyers": ("user_id", "nunique")} if buyers else {})).reset_index()
        if share:
            out["share"] = out.purchases / out.purchases.sum()
        out["revenue"] = out.revenue.round(2)
        out["time_zone"] = UTC
        return out

    customers = buys.groupby("user_id").agg(purchases=("price", "size"), spend=("price", "sum"),
                                            sessions=("user_session", "nunique")).reset_index()
    customers = customers.sort_values(["spend", "user_id"], ascending=[False, True]).head(100)
    customers.insert(0, "rank", range(1, len(customers) + 1))
    sessions = df.dropna(subset=["user_session"]).groupby("user_session").agg(
        start=("event_time", "min"), end=("event_time", "max"), events=("event_type", "size"),
        purchased=("event_type", lambda s: (s == "purchase").any()))
    length = (sessions.end - sessions.start).dt.total_seconds()
    stats = {"sessions": [len(sessions)], "mean_length_s": [length.mean()], "median_length_s": [length.median()],
             "mean_events": [sessions.events.mean()], "mean_events_with_purchase": [sessions.events[sessions.purchased].mean()]}
    frames = {
        "funnel": pd.DataFrame([funnel_at("user_id", "users"), funnel_at("user_session", "sessions")]),
        "event_counts": counts,
        "cart_conversion_by_category": cart_conversion("category_code")[["category_code", "carts", "converted", "conversion_rate", "abandonment_rate"]],
        "cart_conversion_by_brand": cart_conversion("brand")[["brand", "carts", "converted", "conversion_rate", "abandonment_rate"]],
        "categories": categories,
        "top_brands_by_category": brands,
        "purchases_by_hour": by(buys.event_time.dt.hour, "hour"),
        "purchases_by_day_of_month": by(buys.event_time.dt.day, "day"),
        "revenue_daily": by(buys.event_time.dt.strftime("%Y-%m-%d"), "date", share=False, buyers=True),
        "revenue_monthly": by(buys.event_time.dt.strftime("%Y-%m"), "month", share=False, buyers=True),
        "top_customers": customers,
        "session_stats": pd.DataFrame(stats),
    }  # fmt: skip
    return {name: pa.Table.from_pandas(frame, preserve_index=False) for name, frame in frames.items()}


def publish_analytics(events: pa.Table, settings: Settings) -> str:
    from spark_jobs.analytics.job import AnalyticsResult, publish

    tables = kpi_tables(events)
    times = events["event_time"].to_pandas()
    manifest = {
        "kind": "analytics", "time_zone": UTC, "source": "tests/browser synthetic events (pandas KPI tables)",
        "data_range": {"first_event": times.min().strftime("%Y-%m-%dT%H:%M:%SZ"), "last_event": times.max().strftime("%Y-%m-%dT%H:%M:%SZ")},
        "rows_before_dedup": events.num_rows, "tables": {f"{n}.parquet": t.num_rows for n, t in tables.items()},
    }  # fmt: skip
    return publish(AnalyticsResult(tables=tables, manifest=manifest), settings)


@dataclass
class StreamStandIn:
    """The streaming job's part, on demand: topic -> `spark_jobs.stream.process_batch` -> Redis and the lake."""

    settings: Settings
    store: OnlineStore
    writer: str = "browser-test-stream"
    _batches: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: dict[int, int] = field(default_factory=dict)  #: partition -> next offset (the stream's checkpoint)

    def records(self) -> list[TopicRecord]:
        return read_topic(self.settings.kafka_bootstrap, self.settings.clicks_topic)

    def events(self) -> list[ClickEvent]:
        """Every event on the topic (processed or not)."""
        return [ClickEvent.from_wire(r.value) for r in self.records()]

    def apply(self) -> int:
        """Process the records after the last processed offsets as the next micro-batch; records the batch's
        stats and a heartbeat like the stream. Returns the rows handed over."""
        from spark_jobs import stream

        with self._lock:
            records = [r for r in self.records() if r.offset >= self._next.get(r.partition, 0)]
            rows = [ClickEvent.from_wire(r.value).model_dump() for r in records]
            table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
            ingest = [pd.Timestamp(r.timestamp_ms, unit="ms", tz="UTC") if r.timestamp_ms else None for r in records]
            table = table.append_column("ingest_time", pa.array(ingest, pa.timestamp("us", tz="UTC")))
            batch = next(self._batches)
            started = time.perf_counter()
            lake = Lake(self.settings.lake_url, self.settings)
            stream.process_batch(table, batch, store=self.store, lake=lake, writer=self.writer, settings=self.settings)
            oldest = min((r.timestamp_ms for r in records if r.timestamp_ms), default=None)
            now = time.time()
            for query in ("windows", "events"):
                self.store.record_batch(query, {"batch_id": batch, "input_rows": len(rows),
                                                "duration_s": round(time.perf_counter() - started, 3),
                                                "lag_s": round(now - oldest / 1000, 3) if oldest else "",
                                                "written_at": round(now, 3)})  # fmt: skip
            self.store.beat("stream")
            for r in records:
                self._next[r.partition] = max(self._next.get(r.partition, 0), r.offset + 1)
            return len(rows)


@dataclass(frozen=True)
class BrowserWorld:
    settings: Settings
    cands: CandidateSet
    versions: dict[str, str]

    def known_user(self, n: int = 0) -> int:
        return int(self.cands.user_ids[n])

    def unknown_user(self) -> int:
        return int(self.cands.user_ids.max()) + 1_000

    def product_with_neighbours(self) -> int:
        import numpy as np

        nb = self.cands.neighbours["also_viewed"]
        row = int(np.argmax(np.diff(nb.similarity.indptr)))
        return int(nb.item_ids[row])


def build_world(stack: Settings, run_dir: Path) -> BrowserWorld:
    base = stack.redis_url.rsplit("/", 1)[0]
    settings = api_settings(stack, run_dir, redis_url=f"{base}/{BROWSER_REDIS_DB}")
    ensure_topics(settings.kafka_bootstrap, {settings.clicks_topic: 3, settings.dlq_topic: 1})
    events = synthetic_events(run_dir, users=300, days=3)
    versions = {
        "candidates": publish_candidates(events, settings),
        "purchase_model": publish_purchase_model(events, settings),
        "analytics": publish_analytics(events, settings),
    }
    return BrowserWorld(settings, CandidateSet.load(open_artifacts(settings), versions["candidates"]), versions)


class Server:
    """A real uvicorn serving `create_app(settings)` on a free port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start (see the log above)")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
