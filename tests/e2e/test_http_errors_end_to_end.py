"""What gunicorn itself refuses (before the app runs) answers in the API's JSON shape."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.live import LiveService

pytestmark = pytest.mark.e2e


def _raw(live: LiveService, request: bytes) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(live.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"NOT A REQUEST LINE\r\n\r\n", 400),
    ],
)
def test_gunicorn_refusals_are_json(live: LiveService, request_bytes: bytes, status: int) -> None:
    got, headers, body = _raw(live, request_bytes)
    assert got == status, body[:200]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    error = json.loads(body)["error"]
    assert error["code"] and error["message"]
