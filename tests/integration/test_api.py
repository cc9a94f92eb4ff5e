"""The API against real Redis, broker and S3 (the `stack` fixture), with artifacts from the real jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from feature_store.artifacts import open_artifacts
from feature_store.definitions import USER_2M, USER_PROFILE
from feature_store.online import OnlineStore
from feature_store.settings import Settings
from producer.topics import read_topic
from services.api import registry as registry_module
from services.api.app import create_app
from services.api.fast_path import RecommendationsFastPath
from services.api.registry import CandidateSet, ModelMismatch
from tests.api_data import ApiWorld, build_world, copy_version, dead_url, live_click, write_live
from tests.services import free_ports
from spark_jobs.ranker.serving import ProductFeatureCache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> ApiWorld:
    return build_world(stack, tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def store(world: ApiWorld) -> OnlineStore:
    return OnlineStore.from_url(world.settings.redis_url)


@pytest.fixture(autouse=True)
def _clean_online_store(store: OnlineStore) -> None:
    store.client.flushdb()  # the API tests' own db (tests/api_data.API_REDIS_DB)


@pytest.fixture(scope="module")
def client(world: ApiWorld) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as client:
        yield client


def eventually(check, timeout: float = 30.0, interval: float = 0.05):
    """Poll `check()` until it returns a truthy value, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)


def write_profile(store: OnlineStore, user_id: int, **values) -> None:
    row = {"entity_id": user_id, "as_of": time.time(), "views": 10, "carts": 2, "purchases": 1, "sessions": 3,
           "purchase_sessions": 1, **values}  # fmt: skip
    store.write_entities(USER_PROFILE, [row])


def write_session(store: OnlineStore, session_id: str, user_id: int, products: list[int]) -> None:
    """Views of `products` in a live session, ending now (written as the streaming job writes them)."""
    now = time.time()
    write_live(store, [live_click(user_id, p, at=now - 10 + i, session=session_id) for i, p in enumerate(products)])


def write_window(store: OnlineStore, user_id: int, category_code: str) -> None:
    """One view now: the user's current two-minute window, with `category_code` as its last category."""
    write_live(store, [live_click(user_id, 1, category_code=category_code)])


def recommendations(client: TestClient, user_id: int, **params) -> dict:
    response = client.get(f"/recommendations/{user_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- recommendations ---------------------------------------------------------------------------


def test_known_user_gets_als_candidates_with_catalogue_info_and_versions(client: TestClient, world: ApiWorld) -> None:
    body = recommendations(client, world.known_user(), k=5)
    assert body["source"] == "als"
    assert body["fallbacks"] == [{"source": "ranker", "reason": "no_artifact"}]
    assert body["candidates_version"] == world.candidates_version and body["model_version"] is None
    assert len(body["items"]) == 5
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    for item in body["items"]:
        assert item["reason"]
        info = world.cands.describe(item["product_id"])
        assert (item["category_code"], item["brand"], item["price"]) == (info["category_code"], info["brand"], info["price"])
    # the same top items ALS itself ranks first, by dot product
    vector = world.cands.user_vector(world.known_user())
    best = world.cands.item_product_ids[np.argsort(-(world.cands.item_factors @ vector), kind="stable")[:5]]
    assert [item["product_id"] for item in body["items"]] == best.tolist()


def _fast_path_of(app) -> RecommendationsFastPath:
    layer = app.middleware_stack
    while not isinstance(layer, RecommendationsFastPath):
        layer = layer.app
    return layer


def test_the_fast_path_answers_as_the_route_would_and_leaves_it_the_rest(world: ApiWorld, store: OnlineStore) -> None:
    """services.api.fast_path answers valid requests byte for byte as FastAPI's route; FastAPI gets the others."""
    user = world.known_user()
    write_session(store, "s-fast", user, world.cands.item_product_ids[:3].tolist())
    route_only = create_app(world.settings)
    route_only.user_middleware = [m for m in route_only.user_middleware if m.cls is not RecommendationsFastPath]
    valid = ["", "k=5", "k=3&k=7", "k=4&unknown=1", "session_id=s-fast", "category=electronics", "k=2&session_id=s-fast"]
    invalid = ["k=0", "k=101", "k=abc", "k=", "session_id=", "category=" + "x" * 300]
    with TestClient(create_app(world.settings)) as fast, TestClient(route_only) as plain:
        fast_path = _fast_path_of(fast.app)
        cases = [(f"/recommendations/{user}", query, True) for query in valid]
        cases += [(f"/recommendations/{user}", query, False) for query in invalid]
        cases += [(f"/recommendations/{bad}", "", False) for bad in ("-1", "abc", str(2**63), "1.5")]
        for path, query, answered in cases:
            scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": query.encode()}
            assert (fast_path.answer(scope) is not None) is answered, (path, query)
            ours, theirs = fast.get(f"{path}?{query}"), plain.get(f"{path}?{query}")
            assert ours.status_code == theirs.status_code == (200 if answered else 422), (path, query, ours.text)
            assert ours.content == theirs.content and ours.headers == theirs.headers, (path, query)
        assert fast.get(f"/recommendations/{user}?k=7").json() == fast.get(f"/recommendations/{user}?k=3&k=7").json()
        # other methods and routes, and apps with overridden dependencies, are FastAPI's
        for method, path in (("HEAD", f"/recommendations/{user}"), ("GET", "/popular"), ("GET", f"/recommendations/{user}/")):
            assert fast_path.answer({"type": "http", "method": method, "path": path, "root_path": "", "query_string": b""}) is None
        fast.app.dependency_overrides[lambda: None] = lambda: None
        try:
            assert fast_path.answer({"type": "http", "method": "GET", "path": f"/recommendations/{user}", "root_path": "",
                                     "query_string": b""}) is None  # fmt: skip
        finally:
            fast.app.dependency_overrides.clear()


def test_recently_bought_products_are_left_out_and_taste_is_the_reason(client: TestClient, world: ApiWorld, store) -> None:
    user = world.known_user(1)
    first = recommendations(client, user, k=5)["items"]
    bought = [first[0]["product_id"], first[2]["product_id"]]
    brand = world.cands.describe(first[1]["product_id"])["brand"] or "nobrand"
    write_profile(store, user, bought_products=bought, brand_shares={brand: 0.6})
    after = recommendations(client, user, k=5)["items"]
    ids = [item["product_id"] for item in after]
    assert not set(bought) & set(ids)
    assert ids[0] == first[1]["product_id"]
    if brand != "nobrand":
        assert after[0]["reason"] == f"matches your taste for {brand}"


def test_category_filter_keeps_only_that_category_prefix(client: TestClient, world: ApiWorld) -> None:
    code = world.popular_category()
    top = code.split(".")[0]
    body = recommendations(client, world.known_user(), k=10, category=top)
    assert body["items"], body
    assert all(item["category_code"] == top or item["category_code"].startswith(top + ".") for item in body["items"])


def test_flagged_bot_gets_a_non_personalised_answer(client: TestClient, world: ApiWorld, store) -> None:
    user = world.known_user(2)
    write_session(store, "bot-session", user, [world.product_with_neighbours()])
    store.flag_bots([user])
    body = recommendations(client, user, k=5, session_id="bot-session")
    assert body["source"] == "global_popular"
    reasons = {f["source"]: f["reason"] for f in body["fallbacks"]}
    assert reasons["als"] == "bot" and reasons["session_item_item"] == "bot"
    assert reasons["category_popular"] == "no_category"
    assert all(item["reason"].startswith(("best seller", "most viewed")) for item in body["items"])
    # a requested category is not personal: a bot gets that category's best sellers
    code = world.popular_category()
    assert recommendations(client, user, k=5, category=code)["source"] == "category_popular"


def test_unknown_user_with_a_live_session_gets_its_neighbours(client: TestClient, world: ApiWorld, store) -> None:
    seed = world.product_with_neighbours()
    user = world.unknown_user()
    write_session(store, "s-live", user, [seed])
    body = recommendations(client, user, k=5, session_id="s-live")
    assert body["source"] == "session_item_item"
    assert {f["source"]: f["reason"] for f in body["fallbacks"]}["als"] == "unknown_user"
    nb = world.cands.neighbours["also_viewed"]
    row = int(nb.index_of(np.asarray([seed]))[0])
    neighbours = set(nb.item_ids[nb.similarity[row].indices].tolist())
    assert {item["product_id"] for item in body["items"]} <= neighbours
    info = world.cands.describe(seed)
    described = " ".join(str(v) for v in (info["brand"], info["category_code"]) if v)
    assert all(item["reason"].startswith(f"viewed {described}") for item in body["items"])
    assert all(item["reason"].endswith("in this session") for item in body["items"])


def test_unknown_user_falls_to_category_then_global_popular(client: TestClient, world: ApiWorld, store) -> None:
    user = world.unknown_user() + 1
    body = recommendations(client, user, k=3)
    assert body["source"] == "global_popular"
    assert [f["source"] for f in body["fallbacks"]] == ["ranker", "als", "session_item_item", "category_popular"]
    code = world.popular_category()
    write_window(store, user, code)
    body = recommendations(client, user, k=3)
    assert body["source"] == "category_popular"
    assert all(code in item["reason"] for item in body["items"])
    assert all(item["category_code"] == code for item in body["items"])


def test_bad_recommendation_parameters_are_422(client: TestClient) -> None:
    assert client.get("/recommendations/1", params={"k": 0}).status_code == 422
    assert client.get("/recommendations/1", params={"k": 101}).status_code == 422
    assert client.get("/recommendations/-1").status_code == 422
    assert client.get(f"/recommendations/{2**63}").status_code == 422


def test_redis_down_answers_from_popular_never_500(world: ApiWorld) -> None:
    settings = world.settings.model_copy(update={"redis_url": dead_url()})
    with TestClient(create_app(settings)) as client:
        body = recommendations(client, world.known_user(), k=4)
        assert body["source"] == "global_popular" and len(body["items"]) == 4
        assert {f["reason"] for f in body["fallbacks"]} >= {"online_store_down"}
        code = world.popular_category()
        assert recommendations(client, world.known_user(), k=4, category=code)["source"] == "category_popular"
        features = client.get(f"/users/{world.known_user()}/features")
        assert features.status_code == 503 and features.json()["error"] == "online_store_unavailable"
        ready = client.get("/ready")
        assert ready.status_code == 200  # still serving, degraded
        assert ready.json()["status"] == "degraded" and ready.json()["checks"]["redis"]["ok"] is False
        assert "clickrec_online_store_up 0.0" in client.get("/metrics").text


def test_no_artifact_at_all_is_503_with_a_clear_message(world: ApiWorld) -> None:
    empty = world.settings.model_copy(update={"artifacts_url": f"{world.settings.artifacts_url}-empty"})
    with TestClient(create_app(empty)) as client:
        response = client.get("/recommendations/1")
        assert response.status_code == 503
        assert response.json()["error"] == "artifact_missing"
        assert "clickrec train candidates" in response.json()["detail"]
        for path in ("/popular", "/products/1/similar", "/analytics/funnel", "/sessions/s/purchase-probability"):
            assert client.get(path).status_code == 503, path
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"


class ReversingRanker:
    """A stand-in for spark_jobs.ranker.serving.Ranker: reverses the ALS order, reads Redis like the real one."""

    version = "fake-ranker"
    fail = False
    def __init__(self) -> None:
        self.cache = ProductFeatureCache()  # the API reads the candidates' stale product rows into it with the shopper
        self.given_products: list[bool] = []  # per call: did the API hand over the product rows?

    def rerank(self, store, *, user_id, session_id, candidates, als_scores, at, catalogue, neighbours, shopper,
               products=None, catalogue_rows=None):  # fmt: skip
        assert candidates.dtype == np.int64 and len(candidates) == len(als_scores)
        assert len(neighbours.item_ids) and len(catalogue)
        # the API hands over the user's rows it read at `at`: the ranker does not read them again ...
        assert shopper.user_2m == store.read(USER_2M, user_id, at)
        # ... nor the candidates' product rows, when it read them along with the shopper
        if products is not None:
            assert np.array_equal(products, self.cache.plan(candidates, at, catalogue).block, equal_nan=True)
            assert np.array_equal(catalogue_rows, catalogue.index_of(candidates))  # and their catalogue rows
        self.given_products.append(products is not None)
        if self.fail:
            raise RuntimeError("boom")
        return -np.asarray(als_scores, dtype=np.float64)


def test_ranker_reorders_the_als_candidates_and_a_failing_ranker_costs_only_the_rerank(
    world: ApiWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranker = ReversingRanker()
    monkeypatch.setitem(registry_module.LOADERS, "ranker", lambda artifacts, version, settings: ranker)
    settings = world.settings.model_copy(update={"artifacts_url": f"{world.settings.artifacts_url}-ranker"})
    artifacts = open_artifacts(settings)
    copy_version(open_artifacts(world.settings), "candidates", target=artifacts)
    with artifacts.new_version("ranker") as version:
        version.put_json("model_meta.json", {"features": []})
    with TestClient(create_app(settings)) as client:
        user = world.known_user()
        body = recommendations(client, user, k=100)
        assert body["source"] == "ranker" and body["model_version"] == "fake-ranker" and body["fallbacks"] == []
        assert ranker.given_products == [True]
        als = world.cands.item_product_ids[np.argsort(-(world.cands.item_factors @ world.cands.user_vector(user)), kind="stable")]
        pool = world.settings.api_candidate_pool  # the ranker reorders the whole pool; k are shown
        assert [item["product_id"] for item in body["items"]] == als[:pool][::-1][:100].tolist()
        ranker.fail = True
        body = recommendations(client, user, k=5)
        assert body["source"] == "als" and body["fallbacks"] == [{"source": "ranker", "reason": "failed"}]
        assert [item["product_id"] for item in body["items"]] == als[:5].tolist()
        ranker.fail = False
        for broken in ("plan", "apply"):  # the product rows read along with the shopper are an optimisation only
            ranker.cache = BrokenCache(broken)
            body = recommendations(client, user, k=5)
            assert body["source"] == "ranker" and body["fallbacks"] == [], broken
            assert ranker.given_products[-1] is False  # the ranker reads its rows itself


class BrokenCache(ProductFeatureCache):
    """A product cache with a bug in planning or in filling its rows."""

    def __init__(self, broken: str) -> None:
        super().__init__()
        self.broken = broken

    def plan(self, *args, **kwargs):
        if self.broken == "plan":
            raise RuntimeError("bug in plan")
        return super().plan(*args, **kwargs)

    def apply(self, *args, **kwargs):
        raise RuntimeError("bug in apply")


def test_artifact_swap_while_requests_run_fails_no_request(client: TestClient, world: ApiWorld) -> None:
    import weakref

    before = client.get("/ready").json()["artifacts"]["candidates"]["version"]
    old_candidates = weakref.ref(client.app.state.registry.snapshot.candidates)
    statuses: Counter[int] = Counter()
    versions: set[str] = set()
    stop = threading.Event()

    def hammer(path: str) -> None:
        while not stop.is_set():
            response = client.get(path)
            statuses[response.status_code] += 1
            if response.status_code == 200 and "candidates_version" in response.json():
                versions.add(response.json()["candidates_version"])

    threads = [threading.Thread(target=hammer, args=(p,)) for p in (
        f"/recommendations/{world.known_user()}?k=20", "/popular?k=5", f"/products/{world.product_with_neighbours()}/similar",
    )]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: sum(statuses.values()) > 20)
        new = copy_version(open_artifacts(world.settings), "candidates")
        assert new != before
        eventually(lambda: new in versions)
        served = sum(statuses.values())
        eventually(lambda: sum(statuses.values()) > served + 20)  # and it keeps serving after the swap
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert set(statuses) == {200}, statuses
    assert versions == {before, new}
    assert client.get("/ready").json()["artifacts"]["candidates"]["version"] == new
    assert old_candidates() is None  # the swapped-out version's memory is given back


def test_a_purchase_model_with_other_features_refuses_to_start(world: ApiWorld) -> None:
    settings = world.settings.model_copy(update={"artifacts_url": f"{world.settings.artifacts_url}-mismatch"})
    artifacts = open_artifacts(settings)
    copy_version(open_artifacts(world.settings), "purchase_model", target=artifacts)
    version = artifacts.latest("purchase_model")
    meta = artifacts.read_json("purchase_model", "model_meta.json", version)
    with artifacts.new_version("purchase_model") as bad:
        bad.put_bytes("model.json", artifacts.read_bytes("purchase_model", "model.json", version))
        bad.put_json("model_meta.json", {**meta, "features": meta["features"][::-1]})
    with pytest.raises(ModelMismatch, match="purchase_model"):
        with TestClient(create_app(settings)):
            pass


# --- products, popular -----------------------------------------------------------------------------


def test_similar_products(client: TestClient, world: ApiWorld) -> None:
    product = world.product_with_neighbours()
    body = client.get(f"/products/{product}/similar", params={"k": 3}).json()
    assert body["product"]["product_id"] == product and body["kind"] == "also_viewed"
    assert 1 <= len(body["items"]) <= 3
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1.0001 for s in scores)
    bought = client.get(f"/products/{world.product_with_neighbours('also_bought')}/similar", params={"kind": "also_bought"})
    assert bought.status_code == 200 and bought.json()["items"]
    missing = client.get(f"/products/{world.unknown_user()}/similar")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_product"
    assert client.get(f"/products/{product}/similar", params={"kind": "also_liked"}).status_code == 422


def test_popular_overall_by_category_metric_and_window(client: TestClient, world: ApiWorld) -> None:
    body = client.get("/popular", params={"k": 5, "metric": "view"}).json()
    assert body["window_days"] == 7 and body["metric"] == "view" and len(body["items"]) == 5
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    users = [i["users"] for i in body["items"]]
    assert users == sorted(users, reverse=True)
    code = world.popular_category()
    top = code.split(".")[0]
    by_prefix = client.get("/popular", params={"category": top, "metric": "view", "window_days": 1, "k": 50}).json()
    assert by_prefix["items"] and all(i["category_code"].split(".")[0] == top for i in by_prefix["items"])
    exact = client.get("/popular", params={"category": code, "metric": "view", "k": 50}).json()["items"]
    assert exact and all(i["category_code"] == code for i in exact)
    assert client.get("/popular", params={"window_days": 3}).status_code == 404
    assert client.get("/popular", params={"metric": "like"}).status_code == 422
    assert client.get("/popular", params={"category": "no.such.category"}).json()["items"] == []


# --- users, sessions ------------------------------------------------------------------------------


def test_user_features_show_every_group_with_freshness(client: TestClient, world: ApiWorld, store) -> None:
    user = world.known_user()
    empty = client.get(f"/users/{user}/features").json()
    assert empty["groups"] == {"user_2m": None, "user_profile": None} and empty["bot"] is False
    assert empty["in_candidates"] is True
    write_profile(store, user, bought_products=[1, 2], brand_shares={"samsung": 0.5})
    write_window(store, user, "electronics.smartphone")
    write_session(store, "s-feat", user, [11, 12])
    store.flag_bots([user])
    body = client.get(f"/users/{user}/features", params={"session_id": "s-feat"}).json()
    assert body["bot"] is True
    groups = body["groups"]
    assert groups["user_profile"]["features"]["bought_products"] == [1, 2]
    assert groups["user_profile"]["features"]["brand_shares"] == {"samsung": 0.5}
    assert groups["user_profile"]["features"]["mean_price"] is None  # missing, not 0
    assert groups["user_2m"]["features"]["views"] == 3  # the window's view plus the session's two
    assert groups["user_2m"]["features"]["mean_view_price"] == 10.0
    assert groups["session"]["features"]["recent_products"] == [11, 12]
    assert groups["session"]["features"]["user_id"] == user
    for group in groups.values():
        assert 0 <= group["age_s"] < 60 and group["written_at"] <= body["at"]
        assert group["key"].startswith(f"fs:v1:{group['group']}:")


def test_purchase_probability_of_a_live_session(client: TestClient, world: ApiWorld, store) -> None:
    user = world.known_user()
    now = time.time()
    product = world.product_with_neighbours()
    write_live(store, [
        live_click(user, product, at=now - 60, session="s-buy", category_id=1),
        live_click(user, product, at=now - 30, session="s-buy", category_id=1, event_type="cart"),
    ])  # fmt: skip
    unknown_history = client.get("/sessions/s-buy/purchase-probability").json()
    assert unknown_history["history_known"] is False and unknown_history["features"]["past_sessions"] is None
    write_profile(store, user)
    body = client.get("/sessions/s-buy/purchase-probability").json()
    assert 0.0 <= body["probability"] <= 1.0 and body["events"] == 2 and body["user_id"] == user
    assert body["model_version"] == world.purchase_model_version and body["history_known"] is True
    assert body["features"]["carted"] == 1.0 and body["features"]["past_sessions"] == 3.0
    assert body["features"]["duration_s"] == pytest.approx(30.0, abs=0.01)
    missing = client.get("/sessions/nope/purchase-probability")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_session"


# --- events ------------------------------------------------------------------------------------------


def click(**overrides) -> dict:
    return {"event_time": "2026-01-01T10:00:00Z", "event_type": "view", "product_id": 1005115, "category_id": 7,
            "category_code": "electronics.smartphone", "brand": "samsung", "price": 289.59, "user_id": 42,
            "user_session": "s-1", **overrides}  # fmt: skip


def test_posted_events_land_in_the_topic_keyed_by_user(client: TestClient, world: ApiWorld) -> None:
    one = client.post("/events", json=click(event_id="0123456789abcdef"))
    assert one.status_code == 202 and one.json() == {"accepted": 1, "topic": world.settings.clicks_topic}
    many = client.post("/events", json=[click(user_id=43, event_type="cart"), click(user_id=44)])
    assert many.status_code == 202 and many.json()["accepted"] == 2
    records = eventually(lambda: (r := read_topic(world.settings.kafka_bootstrap, world.settings.clicks_topic)) and len(r) >= 3 and r)
    assert len(records) == 3
    values = [json.loads(r.value) for r in records]
    assert sorted((r.key.decode(), v["user_id"]) for r, v in zip(records, values)) == [("42", 42), ("43", 43), ("44", 44)]
    assert {v["source"] for v in values} == {"live"}
    assert "0123456789abcdef" in {v["event_id"] for v in values}
    assert "clickrec_events_accepted_total 3.0" in client.get("/metrics").text


def test_bad_events_are_422_with_reasons_and_nothing_is_published(client: TestClient, world: ApiWorld) -> None:
    before = len(read_topic(world.settings.kafka_bootstrap, world.settings.clicks_topic))
    bad = client.post("/events", json=click(price=-1, event_type="teleport"))
    assert bad.status_code == 422
    fields = {tuple(e["loc"][2:]) for e in bad.json()["detail"]}
    assert fields == {("price",), ("event_type",)}
    batch = client.post("/events", json=[click(), click(event_time="2026-01-01 10:00:00")])
    assert batch.status_code == 422
    detail = batch.json()["detail"]
    assert [e["loc"][2:] for e in detail] == [[1, "event_time"]] and "time zone" in detail[0]["msg"]
    for body in ([], {"nope": 1}, "text", [click(extra=1)]):
        assert client.post("/events", json=body).status_code == 422, body
    assert client.post("/events", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert len(read_topic(world.settings.kafka_bootstrap, world.settings.clicks_topic)) == before
    assert 'clickrec_events_rejected_total{reason="validation"}' in client.get("/metrics").text


def test_broker_down_is_503_with_a_clear_message(world: ApiWorld) -> None:
    settings = world.settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_ports(1)[0]}", "api_publish_timeout_seconds": 0.5}
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/events", json=click())
        assert response.status_code == 503 and response.json()["error"] == "broker_unavailable"
        assert "did not acknowledge" in response.json()["detail"] and "retry" in response.json()["detail"]
        assert response.headers["retry-after"]
        ready = client.get("/ready").json()
        assert ready["status"] == "degraded" and ready["checks"]["kafka"]["ok"] is False


# --- analytics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tables"),
    [
        ("/analytics/summary", ["event_counts", "session_stats", "funnel"]),
        ("/analytics/funnel", ["funnel", "event_counts"]),
        ("/analytics/abandonment", ["cart_conversion_by_category", "cart_conversion_by_brand"]),
        ("/analytics/categories", ["categories"]),
        ("/analytics/brands", ["top_brands_by_category"]),
        ("/analytics/prime-time", ["purchases_by_hour", "purchases_by_day_of_month"]),
        ("/analytics/revenue", ["revenue_daily", "revenue_monthly"]),
        ("/analytics/customers", ["top_customers"]),
        ("/analytics/sessions", ["session_stats"]),
    ],
)
def test_analytics_routes_serve_the_artifact(client: TestClient, world: ApiWorld, path: str, tables: list[str]) -> None:
    body = client.get(path).json()
    assert body["version"] == world.analytics_version
    assert body["data_range"]["first_event"] == "2019-10-01T00:00:00Z"
    assert [t["name"] for t in body["tables"]] == tables
    assert all(t["rows"] for t in body["tables"])


def test_analytics_values_filters_and_nan(client: TestClient) -> None:
    funnel = client.get("/analytics/funnel").json()["tables"][0]["rows"]
    assert funnel[0] == {"level": "users", "entities": 10, "viewed": 10, "carted": 3, "purchased": 2,
                         "cart_rate": 0.3, "purchase_rate": 2 / 3, "conversion": 0.2}  # fmt: skip
    stats = client.get("/analytics/sessions").json()["tables"][0]["rows"][0]
    assert stats["mean_events_with_purchase"] is None  # NaN in the artifact
    brands = client.get("/analytics/brands", params={"category": "appliances.kitchen.washer"}).json()["tables"][0]
    assert [r["brand"] for r in brands["rows"]] == ["lg"]
    assert len(client.get("/analytics/customers", params={"limit": 1}).json()["tables"][0]["rows"]) == 1


def test_session_journey_from_the_lake_and_from_the_live_session(client: TestClient, world: ApiWorld, store) -> None:
    import pyarrow as pa

    from feature_store.lake import Lake
    from producer.schema import EVENT_SCHEMA

    rows = [click(event_time=f"2026-01-01T10:00:{s:02d}Z", event_type=t, user_session="s-lake", event_id=f"{s:016x}",
                  source="live") for s, t in ((5, "cart"), (0, "view"), (5, "view"))]  # fmt: skip
    from producer.events import ClickEvent

    events = [ClickEvent.model_validate(r).model_dump() for r in rows]
    Lake(world.settings.lake_url, world.settings).write_batch(pa.Table.from_pylist(events, schema=EVENT_SCHEMA), 1)
    body = client.get("/analytics/sessions/s-lake/journey").json()
    assert body["source"] == "lake"
    assert [(s["step"], s["event_type"], s["seconds_since_start"]) for s in body["steps"]] == [
        (1, "view", 0.0), (2, "view", 5.0), (3, "cart", 5.0)
    ]  # fmt: skip
    assert body["steps"][0]["event_time"].startswith("2026-01-01T10:00:00") and body["steps"][0]["brand"] == "samsung"
    assert client.get("/analytics/sessions/never/journey").status_code == 404
    product = world.product_with_neighbours()
    write_live(store, [live_click(1, product, session="s-lake")])
    body = client.get("/analytics/sessions/s-lake/journey").json()
    assert body["source"] == "online_store" and len(body["steps"]) == 1
    assert body["steps"][0]["category_code"] == world.cands.describe(product)["category_code"]  # from the catalogue


# --- health, readiness, metrics --------------------------------------------------------------------------


def test_health_ready_and_metrics(client: TestClient, world: ApiWorld, store) -> None:
    assert client.get("/health").json() == {"status": "ok", "pid": os.getpid()}  # TestClient: this process
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["serving"] is True
    assert body["checks"]["redis"]["ok"] and body["checks"]["kafka"]["ok"] and body["checks"]["artifact_store"]["ok"]
    assert body["checks"]["stream"]["ok"] is False  # no streaming job in this test
    assert body["status"] == "degraded"
    assert body["artifacts"]["purchase_model"]["version"] == world.purchase_model_version
    assert body["artifacts"]["analytics"]["version"] == world.analytics_version
    assert body["artifacts"]["ranker"]["version"] is None

    store.beat("stream")
    store.record_batch("windows", {"batch_id": 7, "input_rows": 120, "duration_s": 0.8, "lag_s": 1.5,
                                   "written_at": time.time()})  # fmt: skip
    body = client.get("/ready").json()
    assert body["checks"]["stream"]["ok"] and body["checks"]["stream"]["queries"]["windows"]["batch_id"] == "7"
    assert body["status"] == "ready"

    recommendations(client, world.unknown_user(), k=2)
    candidates = client.get("/ready").json()["artifacts"]["candidates"]["version"]
    text = client.get("/metrics").text
    assert 'clickrec_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/recommendations/{user_id}",status="200"}' in text
    assert 'clickrec_recommendations_total{source="global_popular"}' in text
    assert 'clickrec_recommendation_fallbacks_total{reason="unknown_user",source="als"}' in text
    assert f'clickrec_artifact_info{{kind="candidates",version="{candidates}"}} 1.0' in text
    assert 'clickrec_artifact_loaded{kind="ranker"} 0.0' in text
    assert 'clickrec_stream_lag_seconds{query="windows"} 1.5' in text
    assert 'clickrec_stream_batch_rows{query="windows"} 120.0' in text
    assert "clickrec_stream_heartbeat_age_seconds" in text and "clickrec_online_store_up 1.0" in text
    assert f"/recommendations/{world.unknown_user()}" not in text  # route templates, not raw paths
    assert client.get("/docs").status_code == 200 and "/recommendations/{user_id}" in client.get("/openapi.json").json()["paths"]


def test_clickrec_api_serves_over_uvicorn(world: ApiWorld, tmp_path: Path) -> None:
    port = free_ports(1)[0]
    env = {
        **os.environ,
        **{name.upper(): str(value) for name, value in world.settings.model_dump().items()},
        "API_PORT": str(port),
        "API_HOST": "127.0.0.1",
    }
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "clickrec"), "api"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)  # fmt: skip
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(healthy, timeout=60, interval=0.2)
        body = httpx.get(f"http://127.0.0.1:{port}/recommendations/{world.known_user()}", params={"k": 3}).json()
        assert body["source"] == "als" and len(body["items"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "Application shutdown complete" in (tmp_path / "api.log").read_text()  # a graceful stop on SIGTERM


def test_user_factors_are_memory_mapped_once_per_version_and_equal_the_artifact(world: ApiWorld, tmp_path: Path) -> None:
    artifacts = open_artifacts(world.settings)
    stale = tmp_path / "00000000T000000Z-old"  # an older version's file: removed by the next load
    stale.mkdir()
    mapped = CandidateSet.load(artifacts, world.candidates_version, tmp_path)
    assert isinstance(mapped.user_factors, np.memmap) and not mapped.user_factors.flags.writeable
    assert np.array_equal(mapped.user_factors, world.cands.user_factors)  # world.cands: loaded into RAM
    user = world.known_user(3)
    assert np.array_equal(mapped.user_vector(user), world.cands.user_vector(user))
    path = tmp_path / world.candidates_version / "user_factors.npy"
    written = path.stat().st_mtime_ns
    again = CandidateSet.load(artifacts, world.candidates_version, tmp_path)  # a second worker maps the same file
    assert path.stat().st_mtime_ns == written and np.array_equal(again.user_factors, mapped.user_factors)
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".lock", world.candidates_version]


def test_recent_users_keep_their_als_lists_and_a_swapped_out_version_is_freed(world: ApiWorld) -> None:
    import gc
    import weakref

    from services.api.recommend import top_by_factors

    artifacts = open_artifacts(world.settings)
    kept = CandidateSet.load(artifacts, world.candidates_version, recent_users=2)
    users = [world.known_user(i) for i in range(3)]
    for user in users:
        rows, scores = top_by_factors(kept.user_vector(user), kept.item_factors, 20)
        top = kept.als_top(user, 20)
        assert top.ids.tolist() == kept.item_product_ids[rows].tolist() and np.allclose(top.scores, scores)
        assert top.catalogue_rows.tolist() == kept.catalogue.index_of(top.ids).tolist()
        assert not any(array.flags.writeable for array in top)  # shared between requests
    assert kept.als_top(users[2], 20).ids is kept.als_top(users[2], 20).ids  # a recent user's list is kept ...
    first = kept.als_top(users[0], 20).ids
    kept.als_top(users[1], 20), kept.als_top(users[2], 20)  # ... until two other users pushed it out
    assert kept.als_top(users[0], 20).ids is not first
    assert kept.als_top(10**15, 20) is None  # a user ALS never saw
    none = CandidateSet.load(artifacts, world.candidates_version, recent_users=0)
    assert none.als_top(users[0], 20).ids is not none.als_top(users[0], 20).ids
    gone = weakref.ref(kept)
    gc.disable()  # freed by reference counting alone: the kept lists hold no cycle back to their version
    try:
        del kept
        assert gone() is None
    finally:
        gc.enable()


def test_a_hung_redis_costs_one_request_a_timeout_then_the_fallbacks_answer_at_once(world: ApiWorld) -> None:
    import socket

    hung = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    try:
        settings = world.settings.model_copy(update={
            "redis_url": f"redis://127.0.0.1:{hung.getsockname()[1]}/0", "api_redis_timeout_seconds": 0.3,
            "api_redis_retry_seconds": 30.0,
        })  # fmt: skip
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            first = recommendations(client, world.known_user(), k=4)
            assert time.perf_counter() - started >= 0.3  # it waited for Redis once ...
            assert first["source"] == "global_popular"
            started = time.perf_counter()
            for i in range(10):
                body = recommendations(client, world.known_user(i), k=4)
                assert body["source"] == "global_popular"
                assert {f["reason"] for f in body["fallbacks"]} >= {"online_store_down"}
            assert time.perf_counter() - started < 0.3  # ... then not at all while the breaker is open
    finally:
        hung.close()
