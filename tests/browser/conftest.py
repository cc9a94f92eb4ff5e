"""Fixtures of the browser tests: the world, a real uvicorn server, Chromium through Playwright, pages that
record console errors and refuse every request that would leave the app, screenshots in
tests/browser/screenshots/ (git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_store.online import OnlineStore
from feature_store.settings import Settings
from tests.browser.world import BrowserWorld, Server, StreamStandIn, build_world

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 375, "height": 812}


def chromium_path() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        missing = f"no Chromium at {' or '.join(CHROMIUM_PATHS)} or on PATH: `make system-deps` installs it (apt)"
        if os.environ.get("CI"):  # `make test` installs it: a skip there would hide a broken install step
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def world(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> BrowserWorld:
    return build_world(stack, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="session")
def store(world: BrowserWorld) -> Iterator[OnlineStore]:
    store = OnlineStore.from_url(world.settings.redis_url)
    store.client.flushdb()  # the browser tests' own db
    yield store
    store.client.close()


@pytest.fixture(scope="session")
def stream(world: BrowserWorld, store: OnlineStore) -> StreamStandIn:
    return StreamStandIn(world.settings, store)


@pytest.fixture(scope="session")
def server(world: BrowserWorld, store: OnlineStore) -> Iterator[Server]:
    with Server(world.settings) as server:
        yield server


class Pages:
    """Opens pages that record console errors and uncaught exceptions, and abort (and record) every request
    that is not to the app itself: nothing may come from the internet. Saves screenshots."""

    def __init__(self, browser, server: Server) -> None:
        self.browser, self.server = browser, server
        self.contexts: list = []
        self.errors: list[str] = []
        self.outside: list[str] = []  #: requests to anywhere but the app (aborted)
        self.requests: list[str] = []  #: every request the pages made to the app

    def _route(self, route) -> None:
        url = route.request.url
        if url == self.server.url or url.startswith(self.server.url + "/"):
            self.requests.append(url)
            route.continue_()
        else:
            self.outside.append(url)
            route.abort("blockedbyclient")

    def open(self, path: str = "/", viewport: dict[str, int] = DESKTOP):
        context = self.browser.new_context(viewport=viewport, base_url=self.server.url)
        context.set_default_timeout(10_000)
        context.route("**/*", self._route)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: console: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: uncaught: {e}"))
        page.goto(path)
        return page

    def screenshot(self, page, name: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser, server: Server) -> Iterator[Pages]:
    pages = Pages(browser, server)
    try:
        yield pages
    finally:
        pages.close()
    assert not pages.outside, "requests that would leave the app:\n" + "\n".join(pages.outside)
    assert not pages.errors, "console errors:\n" + "\n".join(pages.errors)


def assert_fits(page, width: int) -> None:
    """Nothing wider than the screen: no sideways scrolling of the page, and no table cut off inside its box."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "horizontal scrolling"
    cut = page.evaluate("""() => [...document.querySelectorAll('.table-wrap')]
        .filter((w) => w.offsetParent !== null && w.scrollWidth > w.clientWidth + 1)
        .map((w) => `${w.firstElementChild.id || w.closest('section, figure')?.querySelector('h2, h3')?.textContent}: `
                    + `${w.scrollWidth} > ${w.clientWidth} px`)""")
    assert not cut, f"tables wider than their box at {width} px: {cut}"
