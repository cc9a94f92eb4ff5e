"""Builders for the API tests: real artifacts from the real jobs on small synthetic data, online features.

`ApiWorld` is what an API test needs: settings aimed at the test services (a
fresh S3 prefix for artifacts, private topics, a private Redis db, a private
lake), the candidates artifact made by `run_candidates`, a purchase model
trained and published by `spark_jobs.purchase_model`, and an analytics
artifact written by the analytics job's own `publish`.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from feature_store.artifacts import Artifacts, open_artifacts
from feature_store.lake import events_from_csv
from feature_store.online import OnlineStore
from feature_store.settings import Settings
from producer.events import ClickEvent
from producer.schema import EVENT_SCHEMA
from producer.synth import SynthConfig, write_synthetic_csv
from producer.topics import ensure_topics
from services.api.registry import CandidateSet
from spark_jobs import partials
from spark_jobs.stream import write_online
from spark_jobs.candidates.als_implicit import ALSParams
from spark_jobs.candidates.job import CandidateParams, run_candidates
from tests.services import free_ports, unique_topic_name

#: The Redis db the API tests use, apart from the other tests' db 0.
API_REDIS_DB = 7


def api_settings(stack: Settings, run_dir: Path, **overrides: Any) -> Settings:
    """Settings on the test services with a private artifact prefix, topics, Redis db and lake."""
    base = stack.redis_url.rsplit("/", 1)[0]
    values: dict[str, Any] = {
        "artifacts_url": f"s3://{stack.s3_bucket}/api-{uuid.uuid4().hex[:8]}",
        "lake_url": f"file://{run_dir / 'lake'}",
        "redis_url": f"{base}/{API_REDIS_DB}",
        "clicks_topic": unique_topic_name("api-clicks"),
        "dlq_topic": unique_topic_name("api-dlq"),
        "api_artifact_poll_seconds": 0.2,
        "api_publish_timeout_seconds": 2.0,
        **overrides,
    }
    return stack.model_copy(update=values)


def dead_url(scheme_host: str = "redis://127.0.0.1") -> str:
    """A URL on a port nothing listens on."""
    return f"{scheme_host}:{free_ports(1)[0]}/0"


def synthetic_events(directory: Path, users: int = 300, days: int = 2, seed: int = 11) -> pa.Table:
    path = directory / "clicks.csv"
    write_synthetic_csv(path, SynthConfig(users=users, days=days, seed=seed), progress=False)
    return pa.concat_tables(events_from_csv(path))


def publish_candidates(events: pa.Table, settings: Settings) -> str:
    params = CandidateParams(top_n=20, als=ALSParams(factors=8, iterations=3, num_threads=1), progress=False)
    return run_candidates(events, open_artifacts(settings), settings, params, source="test").version


def publish_purchase_model(events: pa.Table, settings: Settings) -> str:
    from spark_jobs.purchase_model.features import build_training_set
    from spark_jobs.purchase_model.model import publish, train

    model = train(build_training_set(events, max_points_per_session=5), rounds=15, early_stopping=5)
    return publish(model, open_artifacts(settings), {"source": "test"})


def publish_analytics(settings: Settings) -> str:
    """A small analytics version through the job's own `publish` (tables in the documented layout)."""
    from spark_jobs.analytics.job import AnalyticsResult, publish

    utc = "UTC"
    tables = {
        "funnel": pa.table({"level": ["users", "sessions"], "entities": [10, 14], "viewed": [10, 14],
                            "carted": [3, 3], "purchased": [2, 2], "cart_rate": [0.3, 3 / 14],
                            "purchase_rate": [2 / 3, 2 / 3], "conversion": [0.2, 1 / 7]}),
        "event_counts": pa.table({"event_type": ["view", "cart", "purchase"], "events": [90, 6, 4],
                                  "share": [0.9, 0.06, 0.04]}),
        "cart_conversion_by_category": pa.table({"category_code": ["electronics.smartphone"], "carts": [60],
                                                 "converted": [20], "conversion_rate": [1 / 3],
                                                 "abandonment_rate": [2 / 3]}),
        "cart_conversion_by_brand": pa.table({"brand": ["samsung"], "carts": [55], "converted": [11],
                                              "conversion_rate": [0.2], "abandonment_rate": [0.8]}),
        "categories": pa.table({"category_code": ["electronics.smartphone", "appliances.kitchen.washer"],
                                "purchases": [3, 1], "revenue": [900.5, 250.0], "buyers": [2, 1],
                                "rank_by_purchases": [1, 2], "rank_by_revenue": [1, 2]}),
        "top_brands_by_category": pa.table({"category_code": ["electronics.smartphone", "appliances.kitchen.washer"],
                                            "rank": [1, 1], "brand": ["samsung", "lg"], "purchases": [3, 1],
                                            "revenue": [900.5, 250.0]}),
        "purchases_by_hour": pa.table({"hour": [9, 20], "purchases": [1, 3], "revenue": [250.0, 900.5],
                                       "share": [0.25, 0.75], "time_zone": [utc, utc]}),
        "purchases_by_day_of_month": pa.table({"day": [1], "purchases": [4], "revenue": [1150.5], "share": [1.0],
                                               "time_zone": [utc]}),
        "revenue_daily": pa.table({"date": ["2019-10-01"], "purchases": [4], "revenue": [1150.5], "buyers": [3],
                                   "time_zone": [utc]}),
        "revenue_monthly": pa.table({"month": ["2019-10"], "purchases": [4], "revenue": [1150.5], "buyers": [3],
                                     "time_zone": [utc]}),
        "top_customers": pa.table({"rank": [1, 2], "user_id": [512, 513], "purchases": [2, 1],
                                   "spend": [600.0, 300.5], "sessions": [1, 1]}),
        # NaN where nothing was bought: JSON has no NaN, the API must answer null
        "session_stats": pa.table({"sessions": [14], "mean_length_s": [61.5], "median_length_s": [40.0],
                                   "mean_events": [7.1], "mean_events_with_purchase": [math.nan]}),
    }  # fmt: skip
    manifest = {
        "kind": "analytics",
        "created_at": datetime.now(timezone.utc).isoformat(),
        "time_zone": utc,
        "data_range": {"first_event": "2019-10-01T00:00:00Z", "last_event": "2019-10-02T23:59:59Z"},
        "rows_before_dedup": 100,
        "rows_after_dedup": 100,
        "duplicates_removed": 0,
        "tables": {f"{name}.parquet": table.num_rows for name, table in tables.items()},
    }
    return publish(AnalyticsResult(tables=tables, manifest=manifest), settings)


def copy_version(artifacts: Artifacts, kind: str, target: Artifacts | None = None) -> str:
    """Publish the LATEST version of `kind` again as a new version (of `target`, default the same store)."""
    source = artifacts.latest(kind)
    files = [k.split("/", 2)[2] for k in artifacts.store.list(f"{kind}/{source}/")]
    with (target or artifacts).new_version(kind) as version:
        for name in files:
            if name != "_COMPLETE":
                version.put_bytes(name, artifacts.read_bytes(kind, name, source))
    return version.version


@dataclass(frozen=True)
class ApiWorld:
    """Settings plus what the published artifacts hold, for picking users and products in tests."""

    settings: Settings
    candidates_version: str
    purchase_model_version: str
    analytics_version: str
    cands: CandidateSet

    def known_user(self, n: int = 0) -> int:
        return int(self.cands.user_ids[n])

    def unknown_user(self) -> int:
        return int(self.cands.user_ids.max()) + 1_000

    def product_with_neighbours(self, kind: str = "also_viewed") -> int:
        nb = self.cands.neighbours[kind]
        row = int(np.argmax(np.diff(nb.similarity.indptr)))
        return int(nb.item_ids[row])

    def popular_category(self) -> str:
        """A full category code with a popular list (the first one the job ranked)."""
        lists = self.cands.popular._lists[(self.cands.popular.default_window, "view")]
        codes = [c for c, cid in zip(lists["category_code"], lists["category_id"]) if cid != -1 and c]
        return str(codes[0])


def build_world(stack: Settings, run_dir: Path, **overrides: Any) -> ApiWorld:
    """Publish every artifact kind the API serves (no ranker: its serving code is not here yet)."""
    settings = api_settings(stack, run_dir, **overrides)
    ensure_topics(settings.kafka_bootstrap, {settings.clicks_topic: 3, settings.dlq_topic: 1})
    events = synthetic_events(run_dir)
    candidates = publish_candidates(events, settings)
    purchase = publish_purchase_model(events, settings)
    analytics = publish_analytics(settings)
    cands = CandidateSet.load(open_artifacts(settings), candidates)
    return ApiWorld(settings, candidates, purchase, analytics, cands)


_batches = itertools.count(1)


def live_click(user_id: int, product_id: int, *, at: float | None = None, session: str | None = None,
               event_type: str = "view", category_code: str | None = None, brand: str | None = None,
               category_id: int | None = None, price: float = 10.0) -> ClickEvent:  # fmt: skip
    """A live click event (default: a view, now)."""
    return ClickEvent(
        event_time=datetime.fromtimestamp(time.time() if at is None else at, timezone.utc), event_type=event_type,
        product_id=product_id, category_id=category_id, category_code=category_code, brand=brand, price=price,
        user_id=user_id, user_session=session,
    )  # fmt: skip


def write_live(store: OnlineStore, events: list[ClickEvent]) -> None:
    """Write events into Redis the way the streaming job does: per-batch partials merged by the store."""
    table = pa.Table.from_pylist([e.model_dump() for e in events], schema=EVENT_SCHEMA)
    write_online(partials.dedupe_batch(table), next(_batches), store=store, writer="api-test",
                 settings=Settings(_env_file=None))  # fmt: skip
