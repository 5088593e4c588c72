"""A small HTTP client for the API; errors become one readable line."""

from __future__ import annotations

from typing import Any

import click
import requests


class ApiClient:
    """Calls /api/v1 with a bearer token."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request; a non-2xx answer raises ClickException with the API's message."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        try:
            resp = self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.ConnectionError:
            raise click.ClickException(
                f"cannot reach the API at {self.base_url} (set TRAINYARD_URL or --url)"
            ) from None
        if resp.status_code >= 400:
            raise click.ClickException(_error_line(resp))
        return resp

    def get_json(self, path: str, **params: Any) -> Any:
        """GET and decode JSON."""
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, body: Any) -> Any:
        """POST JSON and decode the JSON answer."""
        return self.request("POST", path, json=body).json()


def _error_line(resp: requests.Response) -> str:
    try:
        err = resp.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    line = f"HTTP {resp.status_code} {err.get('code')}: {err.get('message')}"
    # Name the fields the message does not already mention.
    extra = [
        f"{d['loc']}: {d['msg']}"
        for d in err.get("details", [])
        if d.get("msg") and d["msg"] not in line
    ]
    return f"{line} ({'; '.join(extra)})" if extra else line
