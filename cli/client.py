"""A small HTTP client for the API; errors become one readable line.

Transient failures are retried with exponential backoff (tenacity): the API down for a
moment (connection refused or reset), 503 while its database restarts, 429 past the rate
limit (waiting what Retry-After says, at most the backoff's cap; a quota's 429 is not
retried: it lasts until jobs finish). Every POST carries an
Idempotency-Key that stays the same across its retries, so a submission whose answer was
lost is not made twice.
"""

from __future__ import annotations

import uuid
from typing import Any

import click
import requests
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

RETRY_STATUSES = (429, 502, 503, 504)
MAX_ATTEMPTS = 6
MAX_SECONDS = 60.0


class Transient(Exception):
    """An answer worth asking again (RETRY_STATUSES), or none at all."""

    def __init__(self, response: requests.Response | None, reason: str) -> None:
        super().__init__(reason)
        self.response = response


def _wait(state: RetryCallState) -> float:
    """Exponential backoff, or the server's Retry-After when it names a longer wait."""
    backoff = wait_exponential(multiplier=0.5, max=10)(state)
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, Transient) and error.response is not None:
        after = error.response.headers.get("Retry-After", "")
        if after.isdigit():
            return min(max(backoff, float(after)), 10.0)
    return backoff


class ApiClient:
    """Calls /api/v1 with a bearer token."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request (retrying transient failures); a non-2xx answer raises
        ClickException with the API's message."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        if method.upper() == "POST":
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("Idempotency-Key", str(uuid.uuid4()))  # one for all retries
            kwargs["headers"] = headers
        try:
            resp = self._send(method, url, **kwargs)
        except Transient as exc:
            if exc.response is None:
                raise click.ClickException(
                    f"cannot reach the API at {self.base_url} (set TRAINYARD_URL or --url)"
                ) from None
            resp = exc.response
        if resp.status_code >= 400:
            raise click.ClickException(error_line(resp))
        return resp

    @retry(
        retry=retry_if_exception_type(Transient),
        wait=_wait,
        stop=stop_after_attempt(MAX_ATTEMPTS) | stop_after_delay(MAX_SECONDS),
        reraise=True,
    )
    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            resp = self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.ConnectionError as exc:
            if not _never_sent(exc) and not _replay_safe(method, url):
                # It may have been done: asking again could answer "already ended" for a
                # cancel that worked. Say so rather than guess.
                raise click.ClickException(
                    f"the connection to {self.base_url} broke during {method} {url}; "
                    "it may or may not have been done: check with `trainyard show`"
                ) from None
            raise Transient(None, str(exc)) from None
        if resp.status_code in RETRY_STATUSES and not _lasting(resp):
            raise Transient(resp, f"HTTP {resp.status_code}")
        return resp

    def open_stream(self, path: str, headers: dict[str, str]) -> requests.Response:
        """A streamed GET sent once, whatever it answers (the caller decides what to do
        with a 429 or a broken connection: a live stream reconnects from its cursor)."""
        return self._session.get(
            f"{self.base_url}{path}", headers=headers, stream=True, timeout=self._timeout
        )

    def get_json(self, path: str, **params: Any) -> Any:
        """GET and decode JSON."""
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, body: Any) -> Any:
        """POST JSON and decode the JSON answer."""
        return self.request("POST", path, json=body).json()


# POSTs the API replays from their Idempotency-Key instead of doing twice.
_KEYED_POSTS = ("/api/v1/jobs", "/predict")


def _replay_safe(method: str, url: str) -> bool:
    """Whether sending the request again cannot do it twice."""
    path = url.split("?", 1)[0]
    return method.upper() != "POST" or path.endswith(_KEYED_POSTS)


def _never_sent(exc: requests.ConnectionError) -> bool:
    """The connection was refused or never made: the server saw nothing."""
    return isinstance(exc, requests.exceptions.ConnectTimeout) or "NewConnectionError" in repr(exc)


def _lasting(resp: requests.Response) -> bool:
    """A 429 for a quota (too many jobs queued) lasts until jobs finish: not retried.
    Only the rate limit's 429 passes in seconds."""
    if resp.status_code != 429:
        return False
    try:
        return bool(resp.json()["error"]["code"] != "rate_limited")
    except (ValueError, KeyError, TypeError):
        return False


def error_line(resp: requests.Response) -> str:
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
