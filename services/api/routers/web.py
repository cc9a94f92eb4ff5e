"""The web pages: the shop (`/`), the dashboard (`/dashboard`) and the user lookup (`/lookup`).

Server-rendered Jinja2 shells from `web/templates/`; the pages' JavaScript
(`web/static/`, mounted at /static by `mount_static`) calls the JSON API. No
build step and nothing from the internet: plotly.js comes from the installed
`plotly` wheel (`package_data/plotly.min.js`) at /vendor/plotly.min.js.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.api.deps import SnapshotDep

router = APIRouter(tags=["web"], include_in_schema=False)

#: Anonymous shoppers get a random user id from this range (the events model needs a user_id);
#: real ids in the OpenCDP files are below 10^10, so the two never meet.
ANONYMOUS_USER_IDS = (9_000_000_000_000, 9_999_999_999_999)
#: How often the shop refreshes its recommendations and the dashboard its live panels (ms).
POLL_MS = 2_000


def web_dir() -> Path:
    """`web/` of the repository: WEB_DIR if set, else beside the package (editable installs), else ./web."""
    candidates = [Path(os.environ["WEB_DIR"])] if os.environ.get("WEB_DIR") else []
    candidates += [Path(__file__).resolve().parents[3] / "web", Path.cwd() / "web"]
    for path in candidates:
        if (path / "templates").is_dir():
            return path
    raise FileNotFoundError(f"no web/templates in {', '.join(map(str, candidates))}: set WEB_DIR")


@cache
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=web_dir() / "templates")


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def mount_static(app: FastAPI) -> None:
    """Serve web/static at /static."""
    app.mount("/static", StaticFiles(directory=web_dir() / "static"), name="static")


def _page(request: Request, name: str, snapshot, **context) -> HTMLResponse:
    analytics = snapshot.analytics
    return templates().TemplateResponse(request, name, {
        "poll_ms": POLL_MS,
        "anonymous_ids": ANONYMOUS_USER_IDS,
        "time_zone": (analytics.manifest.get("time_zone") if analytics else None) or "UTC",
        **context,
    })  # fmt: skip


@router.get("/", response_class=HTMLResponse)
def shop(request: Request, snapshot: SnapshotDep) -> HTMLResponse:
    return _page(request, "shop.html", snapshot, page="shop")


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, snapshot: SnapshotDep) -> HTMLResponse:
    return _page(request, "dashboard.html", snapshot, page="dashboard")


@router.get("/lookup", response_class=HTMLResponse)
def lookup(request: Request, snapshot: SnapshotDep) -> HTMLResponse:
    return _page(request, "lookup.html", snapshot, page="lookup")


@router.get("/vendor/plotly.min.js")
def plotly() -> FileResponse:
    """plotly.js from the installed wheel (no CDN)."""
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})
