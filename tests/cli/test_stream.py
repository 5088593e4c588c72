"""The CLI's reader of a job's live stream: SSE framing across chunk boundaries, and
reconnecting from the last id when a connection breaks mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
import pytest
import requests

from cli.client import ApiClient
from cli.stream import StreamEvent, job_events, parse

FRAMES = (
    'retry: 1000\n\nevent: lifecycle\nid: 1.0.0.0\ndata: {"kind":"queued","message":"q"}\n\n'
    ": keepalive\n\n"
    'event: metrics\r\nid: 1.1.0.0\r\ndata: {"step":1,"values":{"train/loss":0.5}}\r\n\r\n'
    'event: logs\nid: 1.1.0.3\ndata: {"line":"épreuve ✓","level":"INFO"}\n\n'
)


def test_events_are_framed_whatever_the_chunks() -> None:
    whole = list(parse([FRAMES.encode()]))
    assert [e.kind for e in whole] == ["lifecycle", "metrics", "logs"]
    assert whole[1] == StreamEvent("metrics", {"step": 1, "values": {"train/loss": 0.5}}, "1.1.0.0")
    assert whole[2].data["line"] == "épreuve ✓"
    raw = FRAMES.encode()
    bytewise = list(parse(raw[i : i + 1] for i in range(len(raw))))  # splits UTF-8 too
    assert bytewise == whole


class Broken(requests.Response):
    """A streamed answer that sends `body`, then breaks (if `breaks`)."""

    def __init__(self, body: str, breaks: bool, status: int = 200) -> None:
        super().__init__()
        self.status_code, self.body, self.breaks = status, body.encode(), breaks
        self.headers["Retry-After"] = "0"
        self._content = self.body

    def iter_content(
        self, chunk_size: int | None = 1, decode_unicode: bool = False
    ) -> Iterator[Any]:
        yield self.body
        if self.breaks:
            raise requests.exceptions.ChunkedEncodingError("connection broken")

    def close(self) -> None:
        pass


class Replies(ApiClient):
    def __init__(self, replies: list[Broken]) -> None:
        super().__init__("http://unused", "t")
        self.replies, self.asked = replies, []

    def open_stream(self, path: str, headers: dict[str, str]) -> requests.Response:
        self.asked.append(dict(headers))
        return self.replies.pop(0)


def test_a_broken_stream_goes_on_from_the_last_id_until_end() -> None:
    first = 'event: metrics\nid: 0.1.0.0\ndata: {"step":1}\n\nevent: metrics\nid: 0.2.0.0\nda'
    second = 'event: metrics\nid: 0.2.0.0\ndata: {"step":2}\n\n'
    second += 'event: metrics\nid: 0.3.0.0\ndata: {"step":3}\n\n'  # then the server closes
    third = 'event: metrics\nid: 0.4.0.0\ndata: {"step":4}\n\n'
    third += 'event: end\nid: 0.4.0.0\ndata: {"status":"succeeded"}\n\n'
    http = Replies([Broken(first, True), Broken(second, False), Broken(third, False)])
    events = list(job_events(http, "job"))
    assert [e.data.get("step") for e in events] == [1, 2, 3, 4, None]
    assert events[-1].kind == "end"
    # The half-sent event 2 is asked for again: the cursor is the last whole event's.
    assert http.asked == [{}, {"Last-Event-ID": "0.1.0.0"}, {"Last-Event-ID": "0.3.0.0"}]


def test_a_busy_api_is_asked_again_and_a_gone_job_is_an_error() -> None:
    end = 'event: end\nid: 0.0.0.0\ndata: {"status":"cancelled"}\n\n'
    http = Replies([Broken("", False, status=429), Broken(end, False)])
    assert [e.kind for e in job_events(http, "job")] == ["end"]
    assert len(http.asked) == 2
    gone = Replies([Broken('{"error": {"code": "not_found", "message": "no job x"}}', False, 404)])
    with pytest.raises(click.ClickException, match="no job x"):
        list(job_events(gone, "x"))
