"""The web dashboard: its page, scripts, styles and the vendored chart library, with no
token (every piece of data comes from /api/v1 with the user's own bearer token), and the
example specs its job editor offers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, send_from_directory, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as BaseResponse

bp = Blueprint("ui", __name__)

STATIC = Path(__file__).resolve().parent.parent / "static"
UI = STATIC / "ui"
VENDOR = STATIC / "vendor"
# Scripts only from here; the chart library writes inline styles (tooltips), hence
# 'unsafe-inline' for style only. Data and images come back as blobs or data: URLs.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
ASSET_MAX_AGE = 3600  # an upgrade shows within the hour; the page itself is never cached
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
PAGE_TYPE = "text/html; charset=utf-8"


@bp.get("/")
def root() -> BaseResponse:
    """The dashboard."""
    return redirect(url_for("ui.page"))


@bp.get("/ui")
@bp.get("/ui/")
def page() -> Response:
    """The dashboard's single page (routes are in the URL's #fragment)."""
    response = send_from_directory(UI, "index.html")
    response.headers["Content-Type"] = PAGE_TYPE
    response.headers["Cache-Control"] = "no-store"
    return _page(response)


@bp.get("/ui/examples.json")
def examples() -> Response:
    """The example job specs shipped with the CLI, by file name: what the editor offers."""
    shipped: dict[str, Any] = {}
    folder = resources.files("cli.examples")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith(".json"):
            shipped[entry.name.removesuffix(".json")] = json.loads(entry.read_text("utf-8"))
    response = jsonify({"examples": shipped})
    response.headers["Cache-Control"] = "no-cache"
    return _page(response)


@bp.get("/ui/vendor/<path:name>")
def vendor(name: str) -> Response:
    """The vendored chart library (Apache ECharts) and its licence: no CDN."""
    return _asset(VENDOR, name)


@bp.get("/ui/<path:name>")
def asset(name: str) -> Response:
    """The dashboard's modules, styles and icon."""
    return _asset(UI, name)


def _asset(folder: Path, name: str) -> Response:
    # send_from_directory refuses `..`, absolute paths and anything outside `folder`.
    suffix = Path(name).suffix
    if suffix not in MEDIA_TYPES:
        raise NotFound()
    response = send_from_directory(folder, name, max_age=ASSET_MAX_AGE)
    response.headers["Content-Type"] = MEDIA_TYPES[suffix]
    response.headers["Cache-Control"] = f"public, max-age={ASSET_MAX_AGE}"
    return _page(response)


def _page(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response
