"""The JSON the pages read: catalogue search, one product, categories, the live summary; and the pages' assets
(plotly.js from the wheel, no link to anything outside the app). Against the browser tests' real server."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from feature_store.online import OnlineStore
from services.api.catalog import product_name
from services.api.recommend import in_category
from tests.browser.world import BrowserWorld, Server, StreamStandIn

pytestmark = pytest.mark.integration

WEB = Path(__file__).resolve().parents[2] / "web"


def get(server: Server, path: str, **params) -> dict:
    response = httpx.get(f"{server.url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_product_names_come_from_brand_category_and_id() -> None:
    assert product_name(1002099, "electronics.smartphone", "samsung") == "Samsung smartphone #1002099"
    assert product_name(7, "appliances.kitchen.meat_grinder", None) == "Meat grinder #7"
    assert product_name(7, None, "lg") == "Lg #7"
    assert product_name(7, None, None) == "Product #7"


def test_products_browse_search_and_paging(server: Server, world: BrowserWorld) -> None:
    cat = world.cands.catalogue
    everything = get(server, "/products", k=200)
    assert everything["total"] == len(cat) and everything["candidates_version"] == world.versions["candidates"]
    keys = [(-i["purchases"], -i["views"], i["product_id"]) for i in everything["items"]]
    assert keys == sorted(keys)  # most bought, then most viewed
    first = everything["items"][0]
    assert first["name"] == product_name(first["product_id"], first["category_code"], first["brand"])
    assert get(server, "/products", k=3, offset=3)["items"] == everything["items"][3:6]

    product = world.product_with_neighbours()
    info = world.cands.describe(product)
    top = info["category_code"].split(".")[0]
    in_top = get(server, "/products", category=top, k=200)
    assert in_top["total"] == sum(in_category(c, top) for c in cat.category_codes.tolist())
    assert {i["category_code"].split(".")[0] for i in in_top["items"]} == {top}
    by_id = get(server, "/products", q=str(product))["items"]
    assert by_id[0]["product_id"] == product
    kind = info["category_code"].split(".")[-1]
    words = get(server, "/products", q=f"{info['brand'].upper()} {kind}", k=200)
    assert product in {i["product_id"] for i in words["items"]}
    for item in words["items"]:  # every word somewhere in the brand, category code or id
        text = f"{item['product_id']} {item['brand']} {item['category_code']}".lower()
        assert info["brand"].lower() in text and kind in text, item
    assert get(server, "/products", q="no-such-thing")["total"] == 0
    assert httpx.get(f"{server.url}/products", params={"k": 0}).status_code == 422


def test_one_product_and_the_categories(server: Server, world: BrowserWorld) -> None:
    product = world.product_with_neighbours()
    body = get(server, f"/products/{product}")
    info = world.cands.describe(product)
    row = int(world.cands.catalogue.index_of(np.asarray([product]))[0])
    assert body == {**info, "name": product_name(product, info["category_code"], info["brand"]),
                    "views": int(world.cands.catalogue.views[row]), "purchases": int(world.cands.catalogue.purchases[row])}  # fmt: skip
    missing = httpx.get(f"{server.url}/products/{world.unknown_user()}")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_product"
    categories = get(server, "/categories")
    counts = [c["products"] for c in categories["categories"]]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) + categories["uncategorised"] == len(world.cands.catalogue)
    smartphones = {c["category_code"]: c["products"] for c in categories["categories"]}[info["category_code"]]
    assert smartphones == get(server, "/products", category=info["category_code"])["total"]


def test_live_summary_counts_the_current_two_minute_windows(
    server: Server, world: BrowserWorld, store: OnlineStore, stream: StreamStandIn
) -> None:
    stream.apply()  # whatever earlier tests left on the topic
    store.client.flushdb()
    users = [world.unknown_user() + 500 + n for n in range(3)]
    hot, cold = world.product_with_neighbours(), int(world.cands.catalogue.product_ids[0])
    now = time.time()
    clicks = [(users[0], hot, "view"), (users[0], hot, "cart"), (users[1], hot, "view"), (users[2], cold, "view")]
    events = [{**world.cands.describe(p), "event_time": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now - 5))}Z",
               "event_type": t, "user_id": u, "user_session": f"live-{u}", "price": 1.0} for u, p, t in clicks]  # fmt: skip
    assert httpx.post(f"{server.url}/events", json=events, timeout=10).status_code == 202
    assert stream.apply() == len(events)

    deadline = time.monotonic() + 10
    while (body := get(server, "/live/summary"))["events_2m"] != len(events):  # answers are cached for a second
        assert time.monotonic() < deadline, body
    assert body["active_users_2m"] == 3 and body["scan_truncated"] is False
    assert 0 < body["events_per_s"] <= len(events) / 100  # the window spans 100 to 120 s
    assert [(p["product_id"], p["views"], p["carts"], p["distinct_users"]) for p in body["trending"]] == [(hot, 2, 1, 2), (cold, 1, 0, 1)]
    assert body["trending"][0]["activity"] == 2 * 1.0 + 4.0  # views and a cart, weighted like `activity`
    assert {f["group"]: f["entities"] for f in body["freshness"]} == {"user_2m": 3, "product_2m": 2}
    assert body["stream"]["windows"]["input_rows"] == len(events) and body["heartbeat_age_s"] < 60
    assert body["artifacts"]["candidates"]["version"] == world.versions["candidates"]
    assert body["artifacts"]["ranker"]["version"] is None
    assert 0 <= body["offline_metrics"]["purchase_model"]["test"]["auc"] <= 1
    assert "candidate_catalogue_coverage" in body["offline_metrics"]["candidates"]


def test_pages_and_assets_are_served_by_the_app_alone(server: Server) -> None:
    plotly = httpx.get(f"{server.url}/vendor/plotly.min.js", timeout=10)
    assert plotly.status_code == 200 and plotly.headers["content-type"].startswith("text/javascript")
    assert len(plotly.content) > 1_000_000
    for path in ("/", "/dashboard", "/lookup", "/static/css/app.css", "/static/js/shop.js", "/static/favicon.svg"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path
    assert '<script src="/vendor/plotly.min.js"></script>' in httpx.get(f"{server.url}/dashboard").text
    for file in WEB.rglob("*"):
        if file.suffix in {".html", ".js", ".css", ".svg"}:
            text = file.read_text()
            links = [u for u in re.findall(r"https?://[^\s\"')]+", text) if not u.startswith("http://www.w3.org/")]
            assert not links, f"{file} links outside the app: {links}"
