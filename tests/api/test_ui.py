"""The dashboard's files: served without a token, with their media types, a page CSP and
cache headers; nothing outside the UI folders; the example specs the editor offers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.routes.ui import UI

EXAMPLES = Path(__file__).resolve().parents[2] / "cli" / "examples"
IMPORT = re.compile(r"""^import\s[^'"]*['"](\.{1,2}/[^'"]+)['"];""", re.MULTILINE)


def test_the_page_needs_no_token_and_has_a_page_csp(client: FlaskClient) -> None:
    resp = client.get("/ui/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "img-src 'self' data: blob:" in csp and "'unsafe-eval'" not in csp
    assert "script-src 'self' 'unsafe-inline'" not in csp
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    html = resp.get_data(as_text=True)
    assert '<script type="module" src="/ui/app.js">' in html
    assert "/ui/vendor/echarts-6.1.0.min.js" in html
    assert "<script>" not in html  # no inline script: the CSP would refuse it


def test_the_root_redirects_to_the_dashboard(client: FlaskClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/ui/")


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/ui/app.js", "text/javascript"),
        ("/ui/pages/job.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
        ("/ui/vendor/echarts-6.1.0.min.js", "text/javascript"),
        ("/ui/vendor/echarts-LICENSE.txt", "text/plain"),
    ],
)
def test_assets_are_served_cacheable_with_their_media_type(
    client: FlaskClient, path: str, mimetype: str
) -> None:
    resp = client.get(path)
    assert resp.status_code == 200, path
    assert resp.mimetype == mimetype
    assert resp.headers["Cache-Control"].startswith("public, max-age=")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


def test_the_vendored_chart_library_is_echarts(client: FlaskClient) -> None:
    body = client.get("/ui/vendor/echarts-6.1.0.min.js").get_data(as_text=True)
    assert 'version="6.1.0"' in body
    assert "Apache License" in client.get("/ui/vendor/echarts-LICENSE.txt").get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../routes/ui.py",
        "/ui/%2e%2e/routes/ui.py",
        "/ui/..%2f..%2fpyproject.toml",
        "/ui/pages/..%2f..%2fdocs.js",
        "/ui/vendor/..%2fui%2fapp.js%2f..%2f..%2f..%2fwsgi.py",
        "/ui/vendor/%2e%2e/%2e%2e/routes/ui.py",
        "/ui/%2fetc%2fpasswd",
        "/ui/index.html.py",
        "/ui/no-such-module.js",
        # Allowed suffixes, so only the folder check stands between them and the file:
        "/ui/vendor/..%2fdocs.js",  # api/static/docs.js, outside both folders
        "/ui/vendor/..%2f..%2fstatic%2fdocs.js",
        "/ui/..%2fdocs.js",
        "/ui/vendor/..%2fui%2fapp.js",  # a ui module, but not through the vendor folder
    ],
)
def test_nothing_outside_the_ui_folders_is_served(client: FlaskClient, path: str) -> None:
    resp = client.get(path, follow_redirects=True)  # `//` is redirected to `/` first
    assert resp.status_code == 404, (path, resp.status_code)
    body = resp.get_data(as_text=True)
    assert "import" not in body and "root:" not in body


def test_the_api_still_needs_a_token(client: FlaskClient) -> None:
    assert client.get("/api/v1/jobs").status_code == 401


def test_examples_lists_the_shipped_example_specs(client: FlaskClient) -> None:
    resp = client.get("/ui/examples.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    examples = resp.get_json()["examples"]
    shipped = {p.stem: json.loads(p.read_text()) for p in EXAMPLES.glob("*.json")}
    assert examples == shipped
    assert "lenet_digits" in examples
    assert examples["lenet_digits"]["model"] == {"preset": "lenet"}


def test_every_module_the_ui_imports_is_served(client: FlaskClient) -> None:
    """A relative import of a missing module would break the page in the browser only."""
    modules = sorted(UI.rglob("*.js"))
    assert len(modules) >= 8
    for module in modules:
        source = module.read_text()
        assert source.startswith("// "), f"{module.name}: a top comment says what it does"
        for target in IMPORT.findall(source):
            resolved = (module.parent / target).resolve().relative_to(UI)
            resp = client.get(f"/ui/{resolved.as_posix()}")
            assert resp.status_code == 200, f"{module.name} imports {target}: {resp.status_code}"
