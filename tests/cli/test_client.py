"""The CLI's HTTP client rides through a restarting API: retries with backoff on
connection errors, 503 and 429 (honouring Retry-After), one Idempotency-Key per POST
across its retries, and a readable line when it gives up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest
from tenacity import wait_none

from cli.client import ApiClient
from tests.support.processes import free_port


class Script:
    """The answers a fake API gives, in order, and what it was sent."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.keys: list[str | None] = []
        self.code_429 = "rate_limited"  # the rate limit's; a quota's is quota_exceeded
        self.hang_ups = 0  # requests to answer by closing the connection instead


@pytest.fixture()
def fake_api() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            script.keys.append(self.headers.get("Idempotency-Key"))
            if script.hang_ups:
                script.hang_ups -= 1
                self.close_connection = True  # done, but the answer is lost
                return
            status = script.statuses.pop(0) if script.statuses else 202
            code = script.code_429 if status == 429 else "x"
            busy = {"error": {"code": code, "message": "busy", "details": []}}
            body = json.dumps({"id": "j1"} if status < 400 else busy)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ApiClient._send.retry, "wait", wait_none())  # type: ignore[attr-defined]


def test_503_and_429_are_retried_with_one_idempotency_key(
    fake_api: tuple[str, Script],
) -> None:
    url, script = fake_api
    script.statuses = [503, 429, 503]
    assert ApiClient(url, "t").post_json("/api/v1/jobs", {"kind": "train"}) == {"id": "j1"}
    assert len(script.keys) == 4 and len(set(script.keys)) == 1 and script.keys[0]


def test_it_gives_up_with_the_apis_message(fake_api: tuple[str, Script]) -> None:
    url, script = fake_api
    script.statuses = [503] * 10
    with pytest.raises(click.ClickException, match="HTTP 503 x: busy"):
        ApiClient(url, "t").post_json("/api/v1/jobs", {})
    assert len(script.keys) == 6  # MAX_ATTEMPTS


def test_an_unreachable_api_is_one_line_after_the_retries() -> None:
    with pytest.raises(click.ClickException, match="cannot reach the API"):
        ApiClient(f"http://127.0.0.1:{free_port()}", "t").post_json("/api/v1/jobs", {})


def test_a_quota_429_is_not_retried(fake_api: tuple[str, Script]) -> None:
    url, script = fake_api
    script.statuses, script.code_429 = [429, 429, 429], "quota_exceeded"
    with pytest.raises(click.ClickException, match="HTTP 429 quota_exceeded"):
        ApiClient(url, "t").post_json("/api/v1/jobs", {})
    assert len(script.keys) == 1


def test_a_lost_answer_is_asked_again_only_where_the_api_replays_it(
    fake_api: tuple[str, Script],
) -> None:
    """A submission (keyed) is sent again; a cancel whose answer was lost is not (a second
    one would say "already ended"): the user is told to check."""
    url, script = fake_api
    script.hang_ups = 1
    assert ApiClient(url, "t").post_json("/api/v1/jobs", {}) == {"id": "j1"}
    assert len(script.keys) == 2 and script.keys[0] == script.keys[1]
    script.keys, script.hang_ups = [], 1
    with pytest.raises(click.ClickException, match="may or may not have been done"):
        ApiClient(url, "t").post_json("/api/v1/jobs/j1/cancel", {})
    assert len(script.keys) == 1
