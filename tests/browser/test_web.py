"""The shop, the dashboard and the user lookup in a real Chromium, against a real uvicorn, Redis, broker and S3.

No streaming job runs here: `StreamStandIn.apply` reads what the page posted from
the Kafka topic and processes it with `spark_jobs.stream.process_batch`, the
function the stream's foreachBatch runs, so the features in Redis are exactly
the ones the stream would write for those clicks. Every wait is a Playwright
`expect` with a deadline; every page must log no console error and request
nothing outside the app (both checked by the `pages` fixture). Phone-width pages
are checked at 375 px and must not scroll sideways (`assert_fits`).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from services.api.catalog import name_of
from services.api.routers.web import ANONYMOUS_USER_IDS
from tests.browser.conftest import PHONE, Pages, assert_fits
from tests.browser.world import BrowserWorld, Server, StreamStandIn

pytestmark = pytest.mark.integration

CHART_IDS = ("live-rate", "funnel", "categories", "brands", "abandonment", "hours", "daily", "customers")


def topic_event(stream: StreamStandIn, **match):
    """The first event on the topic with every field of `match`, polled with a deadline."""
    deadline = time.monotonic() + 15
    while True:
        for event in stream.events():
            if all(getattr(event, k) == v for k, v in match.items()):
                return event
        assert time.monotonic() < deadline, f"no event {match} on the topic within 15 s"


def post_clicks(server: Server, world: BrowserWorld, user: int, session: str, products: list[int], *types: str) -> None:
    """Clicks as the shop posts them (POST /events), for the tests that do not click through the shop."""
    events = []
    for i, pid in enumerate(products):
        info = world.cands.describe(pid)
        for event_type in types or ("view",):
            events.append({**info, "event_time": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(time.time() - 30 + i))}Z",
                           "event_type": event_type, "user_id": user, "user_session": session,
                           "price": info["price"] or 0.0})  # fmt: skip
    response = httpx.post(f"{server.url}/events", json=events, timeout=10)
    assert response.status_code == 202, response.text


def test_sign_in_click_through_add_to_cart_and_the_recommendations_follow(
    pages: Pages, world: BrowserWorld, stream: StreamStandIn
) -> None:
    page = pages.open("/")
    expect(page.get_by_test_id("who")).to_contain_text("Browsing anonymously as #")
    user = world.unknown_user()  # no ALS factors: what it gets depends on its clicks alone

    # sign in with the keyboard: the label leads to the field, Enter submits
    page.get_by_label("User id").focus()
    page.keyboard.type(str(user))
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("who")).to_have_text(f"Signed in as user {user}")
    session = page.evaluate("sessionStorage.getItem('clickrec.session')")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", session)
    source = page.get_by_test_id("recs-source")
    expect(source).to_have_text("global_popular")  # nothing known about this user yet
    expect(page.get_by_test_id("recs-list").locator("li")).to_have_count(8)
    before = page.locator("#recs").get_attribute("data-signature")

    # browse a category, then search the product by its id and open it
    product = world.product_with_neighbours()
    info = world.cands.describe(product)
    page.locator(f'#categories button[data-category="{info["category_code"]}"]').click()
    expect(page.locator("#catalogue-h")).to_have_text(f"Category {info['category_code']}")
    expect(page.locator("#products li").first).to_be_visible()
    page.get_by_label("Search").fill(str(product))
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator(f'#products li[data-product-id="{product}"] a').click()
    expect(page.locator("#product-name")).to_have_text(name_of(info))
    expect(page.locator("#product-price")).to_contain_text(f"{info['price']:,.2f}")
    expect(page.locator('#activity-log li[data-event="view"]')).to_contain_text("(sent)")
    expect(page.locator("#similar li").first).to_be_visible()  # also-viewed neighbours

    # on to an also-viewed product, and back with the browser's Back
    neighbour = int(page.locator("#similar li").first.get_attribute("data-product-id"))
    page.locator("#similar li a").first.click()
    expect(page.locator("#product-name")).to_have_text(name_of(world.cands.describe(neighbour)))
    expect(page.locator('#activity-log li[data-event="view"]')).to_have_count(2)
    page.go_back()
    expect(page.locator("#product-name")).to_have_text(name_of(info))
    expect(page.locator('#activity-log li[data-event="view"]')).to_have_count(3)
    topic_event(stream, user_id=user, user_session=session, event_type="view", product_id=neighbour)

    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator('#activity-log li[data-event="cart"]')).to_contain_text("(sent)")
    expect(page.locator("#cart-list li")).to_contain_text(name_of(info))
    cart = topic_event(stream, user_id=user, user_session=session, event_type="cart")
    assert (cart.product_id, cart.price, cart.category_code, cart.brand) == (product, info["price"], info["category_code"], info["brand"])
    assert abs(cart.event_time.timestamp() - time.time()) < 60
    assert page.locator("#recs").get_attribute("data-signature") == before  # nothing processed the clicks yet

    stream.apply()  # the micro-batch the streaming job would run on these clicks
    expect(source).to_have_text("session_item_item", timeout=10_000)  # the panel polls every 2 s
    expect(page.get_by_test_id("recs-list").locator(".reason").first).to_contain_text("in this session")
    assert page.locator("#recs").get_attribute("data-signature") != before
    expect(page.locator("#recs-updated")).to_contain_text("after your last click")
    expect(page.get_by_test_id("purchase-probability")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    pages.screenshot(page, "shop-desktop")

    # buying takes it out of the cart; the lookup link carries the user and the session
    page.get_by_role("button", name="Buy now").click()
    expect(page.locator('#activity-log li[data-event="purchase"]')).to_contain_text("(sent)")
    expect(page.locator("#cart-empty")).to_be_visible()
    assert page.locator("#lookup-me").get_attribute("href") == f"/lookup?user={user}&session={session}"


def test_anonymous_shopper_on_a_phone_and_every_action_is_a_live_event(
    pages: Pages, world: BrowserWorld, stream: StreamStandIn
) -> None:
    page = pages.open("/", viewport=PHONE)
    first = page.evaluate("sessionStorage.getItem('clickrec.session')")
    page.get_by_role("button", name="New anonymous visit").click()
    expect(page.get_by_test_id("who")).to_contain_text("Browsing anonymously as #")
    user = page.evaluate("JSON.parse(sessionStorage.getItem('clickrec.user'))")
    assert user["anonymous"] and ANONYMOUS_USER_IDS[0] <= user["id"] <= ANONYMOUS_USER_IDS[1]
    session = page.evaluate("sessionStorage.getItem('clickrec.session')")
    assert session != first
    expect(page.get_by_test_id("recs-source")).to_have_text("global_popular")
    expect(page.locator("#products li").first).to_be_visible()
    assert_fits(page, PHONE["width"])
    pages.screenshot(page, "shop-phone")

    page.locator("#products li a").first.click()
    expect(page.get_by_role("button", name="Add to cart")).to_be_in_viewport()
    product = int(page.locator("#products li").first.get_attribute("data-product-id"))
    actions = {"like": "Like", "wishlist": "Add to wishlist", "save_for_later": "Save for later",
               "cart": "Add to cart", "remove_from_cart": "Remove from cart"}  # fmt: skip
    for event_type, label in actions.items():
        page.get_by_role("button", name=label, exact=True).click()
        expect(page.locator(f'#activity-log li[data-event="{event_type}"]')).to_contain_text("(sent)")
    expect(page.locator("#cart-empty")).to_be_visible()  # added, then removed
    for event_type in ("view", *actions):
        event = topic_event(stream, user_id=user["id"], user_session=session, event_type=event_type)
        assert event.product_id == product
    assert_fits(page, PHONE["width"])
    pages.screenshot(page, "shop-product-phone")


def tab_to(page, selector: str, limit: int = 100) -> None:
    """Press Tab until the focused element matches `selector` (at most `limit` presses); its focus must show."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("", "none"), f"no visible focus on {selector}"
            return
    pytest.fail(f"{limit} presses of Tab never reached {selector}")


def test_the_shop_works_with_the_keyboard_alone(pages: Pages, world: BrowserWorld, stream: StreamStandIn) -> None:
    product = world.product_with_neighbours()
    name = name_of(world.cands.describe(product))
    page = pages.open(f"/#product/{product}")  # a shared link to a product
    expect(page.locator("#product-name")).to_have_text(name)
    tab_to(page, "a.skip")
    page.keyboard.press("Enter")  # skip the navigation: the focus moves to the content, the product stays
    expect(page.locator("#main")).to_be_focused()
    expect(page.locator("#product-name")).to_be_visible()
    tab_to(page, "#back")
    page.keyboard.press("Enter")
    expect(page.locator("#catalogue-h")).to_have_text("Popular products")

    tab_to(page, "#search-form input")
    page.keyboard.type(str(product))
    page.keyboard.press("Enter")
    expect(page.locator("#catalogue-h")).to_have_text(f"Search: {product}")
    tab_to(page, f'#products li[data-product-id="{product}"] a')
    page.keyboard.press("Enter")
    expect(page.locator("#product-name")).to_be_focused()  # the product page takes the focus
    expect(page.locator("#product-name")).to_have_text(name)

    tab_to(page, 'button[data-event="cart"]')
    page.keyboard.press("Enter")
    expect(page.locator('#activity-log li[data-event="cart"]')).to_contain_text("(sent)")
    expect(page.locator("#cart-list li")).to_have_count(1)
    tab_to(page, "#similar li a")
    page.keyboard.press("Enter")
    expect(page.locator("#product-name")).not_to_have_text(name)
    user = page.evaluate("JSON.parse(sessionStorage.getItem('clickrec.user'))")["id"]
    topic_event(stream, user_id=user, event_type="cart", product_id=product)


def chart_points(page) -> dict[str, int]:
    return page.evaluate("""ids => Object.fromEntries(ids.map(id => {
        const div = document.getElementById('chart-' + id);
        const traces = (div && div.data) || [];
        return [id, traces.reduce((n, t) => n + ((t.x || t.values || t.y || []).length), 0)];
    }))""", list(CHART_IDS))


def test_dashboard_draws_every_chart_with_data_and_the_live_panels(
    pages: Pages, world: BrowserWorld, server: Server, stream: StreamStandIn
) -> None:
    product = world.product_with_neighbours()
    post_clicks(server, world, world.known_user(3), "dash-session", [product], "view", "cart")
    stream.apply()
    page = pages.open("/dashboard")
    for chart in CHART_IDS:
        expect(page.locator(f"#chart-{chart}")).to_have_attribute("data-rendered", "1")
    points = chart_points(page)
    assert all(n > 0 for n in points.values()), points
    assert page.locator(".chart[data-empty]").count() == 0
    assert page.evaluate("typeof Plotly") == "object"  # served by the app from the plotly wheel, no CDN
    expect(page.locator("#chart-hours")).to_have_attribute("aria-label", re.compile("UTC"))
    expect(page.locator("#analytics-version")).to_have_text(f"version {world.versions['analytics']}")

    expect(page.get_by_test_id("kpi-active-users")).to_have_text(re.compile(r"^[1-9]"))
    expect(page.get_by_test_id("kpi-events-per-s")).not_to_have_text("–")
    expect(page.locator(f'#trending tr[data-product-id="{product}"]')).to_be_visible()
    expect(page.locator('#versions tr[data-kind="candidates"]')).to_contain_text(world.versions["candidates"])
    expect(page.locator("#offline-metrics")).to_contain_text("Purchase model: AUC")
    expect(page.locator("#kpi-heartbeat")).not_to_have_text("never")
    assert f"{server.url}/vendor/plotly.min.js" in pages.requests  # from the app, and nothing from elsewhere (fixture)
    pages.screenshot(page, "dashboard-desktop")

    phone = pages.open("/dashboard", viewport=PHONE)
    for chart in CHART_IDS:
        expect(phone.locator(f"#chart-{chart}")).to_have_attribute("data-rendered", "1")
    expect(phone.locator(f'#trending tr[data-product-id="{product}"]')).to_be_visible()
    expect(phone.locator('#versions tr[data-kind="candidates"]')).to_be_visible()
    assert_fits(phone, PHONE["width"])
    pages.screenshot(phone, "dashboard-phone")


def test_lookup_shows_recommendations_features_and_the_session(
    pages: Pages, world: BrowserWorld, server: Server, stream: StreamStandIn
) -> None:
    user = world.known_user(1)
    product = world.product_with_neighbours()
    post_clicks(server, world, user, "lookup-session", [product, product], "view")
    stream.apply()
    page = pages.open("/dashboard")
    page.get_by_role("navigation").get_by_role("link", name="User lookup").click()
    page.get_by_label("User id").fill(str(user))
    page.get_by_label("Session id").fill("lookup-session")
    page.get_by_label("Session id").press("Enter")
    expect(page.get_by_test_id("lookup-source")).to_have_text("als")  # known to ALS, no ranker artifact here
    recs = page.get_by_test_id("lookup-recs").locator("li")
    expect(recs).to_have_count(10)
    assert all(text.strip() for text in recs.locator(".reason").all_inner_texts())
    expect(page.locator('#lookup-features [data-group="user_2m"] table')).to_contain_text("views")
    expect(page.locator('#lookup-features [data-group="session"] table')).to_contain_text("recent_products")
    expect(page.get_by_test_id("lookup-journey").locator("tbody tr")).to_have_count(2)
    assert page.url.endswith(f"/lookup?user={user}&session=lookup-session")
    pages.screenshot(page, "lookup-desktop")

    phone = pages.open(f"/lookup?user={user}&session=lookup-session", viewport=PHONE)  # the shop's link
    expect(phone.get_by_test_id("lookup-recs").locator("li")).to_have_count(10)
    expect(phone.get_by_test_id("lookup-journey").locator("tbody tr")).to_have_count(2)
    assert_fits(phone, PHONE["width"])
    pages.screenshot(phone, "lookup-phone")


def test_the_api_docs_render_from_local_assets_only(pages: Pages, server: Server) -> None:
    page = pages.open("/docs")
    expect(page.locator(".opblock-summary-path").filter(has_text="/recommendations/{user_id}")).to_be_visible()
    assert f"{server.url}/openapi.json" in pages.requests
    assert pages.outside == [], f"the docs page fetched from outside the app: {pages.outside}"


def test_the_pages_fixture_refuses_every_request_that_leaves_the_app(pages: Pages) -> None:
    """The guard the other tests rely on: a request to anywhere but the app is aborted, recorded and logged."""
    page = pages.open("/lookup")
    elsewhere = "http://127.0.0.1:9/not-the-app.js"  # loopback, but not the app: aborted before any connection
    with page.expect_console_message(lambda m: "ERR_BLOCKED_BY_CLIENT" in m.text):
        assert page.evaluate("url => fetch(url).then(() => 'fetched', () => 'refused')", elsewhere) == "refused"
    assert pages.outside == [elsewhere]
    assert len(pages.errors) == 1 and "ERR_BLOCKED_BY_CLIENT" in pages.errors[0]
    pages.outside.clear()  # expected here: the fixture would fail the test on them
    pages.errors.clear()
