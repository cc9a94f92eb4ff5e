"""End to end on the real sample: replay -> stream -> train -> API, then a live click changes the answer.

Everything is real: the broker, the Spark streaming job (running the whole
time), Redis, the batch jobs writing artifacts, and the FastAPI app. The live
cart event goes in through `POST /events` like the web shop's, travels through
Kafka and the stream into Redis, and the next `/recommendations` call for that
user and session must rank differently, within seconds. A session started live
the same way (`POST /events` -> Kafka -> stream -> Redis) gets its purchase
probability from the model trained on the sample.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
import redis
from fastapi.testclient import TestClient

from feature_store.artifacts import open_artifacts
from feature_store.definitions import SESSION_FEATURES
from feature_store.lake import Lake, load_events
from feature_store.online import OnlineStore
from feature_store.settings import Settings
from producer.publisher import Publisher
from producer.replay import ReplayOptions, replay
from producer.topics import ensure_topics
from services.api.app import create_app
from spark_jobs import stream
from spark_jobs.candidates.job import CandidateParams, train_candidates
from spark_jobs.purchase_model import features as purchase_features
from spark_jobs.purchase_model import model as purchase_model
from spark_jobs.ranker.dataset import DatasetParams
from spark_jobs.ranker.job import RankerJobParams, train_ranker
from spark_jobs.ranker.model import XGBParams
from tests.builders import SAMPLE, needs_sample
from tests.services import unique_topic_name

pytestmark = pytest.mark.integration

#: The sample's events crowd into 40 minutes: batch periods of 8 minutes, labels over the next 10.
RANKER = RankerJobParams(
    dataset=DatasetParams(candidates=CandidateParams(progress=False), refresh=timedelta(minutes=8), train_periods=2,
                          cutoffs_per_period=6, horizon=timedelta(minutes=10), max_users_per_cutoff=200),
    xgb=XGBParams(num_boost_round=80),
    progress=False,
)  # fmt: skip


def eventually(check, timeout: float, interval: float = 0.2):
    """Poll `check()` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(interval)


@pytest.fixture
def settings(stack: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    topic = unique_topic_name(request.node.name)
    configured = stack.model_copy(update={
        "clicks_topic": topic,
        "dlq_topic": topic + ".dlq",
        "checkpoint_dir": tmp_path / "checkpoints",
        "lake_url": f"file://{tmp_path / 'lake'}",
        "artifacts_url": f"file://{tmp_path / 'artifacts'}",
        "api_artifact_poll_seconds": 3600.0,
    })  # fmt: skip
    ensure_topics(configured.kafka_bootstrap, {configured.clicks_topic: 3, configured.dlq_topic: 1})
    redis.Redis.from_url(configured.redis_url).flushdb()
    return configured


def _items(answer: dict) -> list[int]:
    return [item["product_id"] for item in answer["items"]]


def _rank(items: list[int], product: int) -> str:
    return str(items.index(product) + 1) if product in items else "beyond the list"


@needs_sample
def test_a_live_cart_event_changes_the_users_recommendations_within_seconds(spark, settings: Settings) -> None:
    replay(SAMPLE, Publisher.from_settings(settings), ReplayOptions(progress=False, rebase_time="now"))
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=0.5))
    try:
        for query in queries:
            query.processAllAvailable()
        events = Lake(settings.lake_url, settings).read()
        assert events.num_rows > 17_000
        train_candidates(settings, CandidateParams(progress=False))
        result = train_ranker(settings, RANKER, spark=spark)
        assert result.metrics["test"]["reranked"]["queries"] > 0

        # the most active user of the sample, in their latest session
        user = Counter(events["user_id"].to_pylist()).most_common(1)[0][0]
        mine = events.filter(pc.equal(events["user_id"], user)).sort_by("event_time")
        session = mine["user_session"][-1].as_py()
        url = f"/recommendations/{user}?k=50&session_id={session}"
        with TestClient(create_app(settings)) as client:
            before = client.get(url).json()
            assert before["source"] == "ranker", before
            assert client.get("/ready").json()["artifacts"]["ranker"]["scoring"] == "compiled trees"
            # cart a product the ranker put outside the top 10
            product = _items(before)[20]
            row = next(item for item in before["items"] if item["product_id"] == product)
            event = {
                "event_time": datetime.now(UTC).isoformat(), "event_type": "cart", "product_id": product,
                "category_code": row.get("category_code"), "brand": row.get("brand"), "price": row.get("price") or 1.0,
                "user_id": user, "user_session": session,
            }  # fmt: skip
            posted = time.monotonic()
            assert client.post("/events", json=event).status_code == 202

            store = OnlineStore.from_url(settings.redis_url)

            def click_in_features() -> bool:
                live = store.read(SESSION_FEATURES, session) or {}
                return live.get("has_cart") == 1 and product in (live.get("recent_products") or [])

            # The replayed windows keep sliding, so the answer is compared with the last one served
            # before the click reached the features, not with `before`. (An answer, then the features:
            # if they still lack the click, so did the answer.)
            last_without, deadline = before, posted + 10.0
            while True:
                answer = client.get(url).json()
                if click_in_features():
                    break
                last_without = answer
                assert time.monotonic() < deadline, (
                    f"the cart event is not in the session's features 10 s on; the stream's latest batch: "
                    f"{store.stream_stats('events')}"
                )
                time.sleep(0.05)
            in_features = time.monotonic() - posted
            after = client.get(url).json()
        assert after["source"] == "ranker"
        old, new = _items(last_without), _items(after)
        moved = f"the carted product went from rank {_rank(old, product)} to {_rank(new, product)}"
        print(f"the cart event was in the session's features {in_features:.1f} s after it was posted; in the next answer {moved}")
        assert new != old, f"the answer did not change once the cart event was in the features ({moved})"
    finally:
        for query in queries:
            query.stop()


@needs_sample
def test_a_live_session_gets_its_purchase_probability(spark, settings: Settings) -> None:
    trained = purchase_model.train(
        purchase_features.build_training_set(load_events(settings, from_csv=SAMPLE), max_points_per_session=5),
        rounds=30, early_stopping=5,
    )  # fmt: skip
    version = purchase_model.publish(trained, open_artifacts(settings), {"source": str(SAMPLE)})
    queries = stream.start(spark, settings, stream.StreamOptions(trigger_seconds=0.5))
    try:
        with TestClient(create_app(settings)) as client:
            session = f"live-{uuid.uuid4().hex[:12]}"
            url = f"/sessions/{session}/purchase-probability"
            assert client.get(url).status_code == 404  # nothing of it in Redis yet
            now = datetime.now(UTC)
            base = {"product_id": 1005115, "category_id": 2053013555631882655, "category_code": "electronics.smartphone",
                    "brand": "apple", "price": 899.0, "user_id": 990_000_001, "user_session": session}  # fmt: skip
            posted = [
                {**base, "event_time": (now - timedelta(seconds=20)).isoformat(), "event_type": "view"},
                {**base, "event_time": now.isoformat(), "event_type": "cart"},
            ]
            assert client.post("/events", json=posted).status_code == 202

            def answered() -> dict | None:
                response = client.get(url)
                return response.json() if response.status_code == 200 and response.json()["events"] == 2 else None

            body = eventually(answered, timeout=30.0)
        assert body["model_version"] == version and body["user_id"] == base["user_id"]
        assert body["history_known"] is False  # no profile for a new user: NaN history, as documented
        assert body["features"]["carted"] == 1.0 and body["features"]["last_is_cart"] == 1.0
        assert body["features"]["duration_s"] == pytest.approx(20.0, abs=0.01)
        # the same answer the model gives offline for this prefix
        assert body["probability"] == pytest.approx(trained.score_session(purchase_features.session_features(posted)), rel=1e-6)
    finally:
        for query in queries:
            query.stop()
