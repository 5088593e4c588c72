"""A job's live stream (GET /jobs/<id>/stream) as the CLI reads it: Server-Sent Events,
reconnecting with Last-Event-ID whenever the server closes the stream or the connection
breaks, until the `end` event. The server's cursor ids make the reconnects seamless: no
event is lost or repeated."""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import click
import requests

from cli.client import RETRY_STATUSES, ApiClient, error_line
from shared.contract.responses import STREAM_EVENTS, Answer

MAX_BROKEN = 10  # connections in a row that broke before sending anything
MAX_WAIT = 30.0  # the longest wait between two connections
RECONNECT_SECONDS = 1.0  # after a stream that closed with nothing new (the server's `retry:`)


@dataclass(frozen=True)
class StreamEvent:
    """One event: its name (lifecycle, progress, metrics, traces, logs, end), its data."""

    kind: str
    data: dict[str, Any]
    id: str | None

    def payload(self) -> Answer | None:
        """The data as the contract's model of this event (None for a kind this CLI does
        not know: a newer API may send more)."""
        model = STREAM_EVENTS.get(self.kind)
        return model.model_validate(self.data) if model is not None else None


def parse(chunks: Iterable[bytes | str]) -> Iterator[StreamEvent]:
    """The events in a stream's bytes, as the SSE format frames them (comments skipped)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    buffer = ""
    for chunk in chunks:
        buffer += decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        *frames, buffer = buffer.replace("\r\n", "\n").split("\n\n")
        for frame in frames:
            fields: dict[str, str] = {}
            for line in frame.split("\n"):
                name, sep, value = line.partition(":")
                if sep and name:  # a line starting with ':' is a comment (keep-alive)
                    fields[name] = value.removeprefix(" ")
            if "event" in fields and "data" in fields:
                yield StreamEvent(fields["event"], json.loads(fields["data"]), fields.get("id"))


def job_events(http: ApiClient, job_id: str) -> Iterator[StreamEvent]:
    """Every event of the job's stream until `end`, over as many connections as it takes:
    a busy API (429, 503) is asked again after its Retry-After, a broken connection after
    a backoff, a stream the server closed at once (its max_seconds) after its `retry:`."""
    last: str | None = None
    broken = 0
    while True:
        headers = {"Last-Event-ID": last} if last else {}
        got = False
        try:
            with http.open_stream(f"/api/v1/jobs/{job_id}/stream", headers) as resp:
                if resp.status_code in RETRY_STATUSES:
                    time.sleep(min(float(resp.headers.get("Retry-After") or 1), MAX_WAIT))
                    continue
                if resp.status_code >= 400:
                    raise click.ClickException(error_line(resp))
                for event in parse(resp.iter_content(chunk_size=None)):
                    got = True
                    last = event.id or last
                    yield event
                    if event.kind == "end":
                        return
        except requests.RequestException as exc:  # broken mid-stream: go on from `last`
            broken = 0 if got else broken + 1
            if broken >= MAX_BROKEN:
                raise click.ClickException(f"the job's stream keeps breaking: {exc}") from None
            time.sleep(min(0.2 * 2**broken, MAX_WAIT))
            continue
        if not got:
            time.sleep(RECONNECT_SECONDS)
