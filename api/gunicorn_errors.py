"""gunicorn's own refusals (a malformed request line, an over-long URL or header) in the
API's JSON error shape, not as an HTML page.

gunicorn answers these before any application code runs, through `gunicorn.util.
write_error`, and offers no hook for them short of a worker class of one's own; the WSGI
entry point (api/wsgi.py) puts this writer in its place, with the same status and reason.
"""

from __future__ import annotations

import json
from typing import Any

from api.headers import SECURITY_HEADERS


def json_error(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying {"error": {...}}."""
    code = reason.lower().replace(" ", "_") or "bad_request"
    body = json.dumps({"error": {"code": code, "message": message, "details": []}})
    headers = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS.items())
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    )
    return (head + body).encode("latin-1")  # json.dumps escapes everything past ASCII


def install() -> None:
    """Replace gunicorn's HTML error writer with json_error (in a gunicorn process)."""
    try:
        from gunicorn import util  # type: ignore[import-untyped]  # no stubs
    except ImportError:  # not served by gunicorn
        return

    def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
        util.write_nonblock(sock, json_error(status_int, reason, mesg))
        # The gevent worker closes the socket at once after this; with the refused
        # request's bytes still unread, the kernel would answer with a reset and the
        # client would lose the answer. Half-close and drain first, as gthread does.
        util.close_graceful(sock)

    util.write_error = write_error
