"""A job's live stream: Server-Sent Events of its lifecycle events, progress, metric points
and thinned gradient norms (shared.job_feed), each with the cursor after it as its `id:`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from api.context import release_db, services
from api.contract import answers, contract, query_model
from api.ownership import owned_job
from shared.contract.queries import StreamQuery
from shared.errors import QuotaExceeded
from shared.job_feed import Cursor, read_feed

bp = Blueprint("stream", __name__)
KEEPALIVE_SECONDS = 15.0


def frame(kind: str, data: dict[str, Any], cursor: Cursor | None = None) -> str:
    """One SSE event: `event:`, `id:` (the cursor after it), one `data:` line of JSON."""
    head = f"event: {kind}\n" + (f"id: {cursor}\n" if cursor is not None else "")
    return head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.get("/jobs/<job_id>/stream")
@contract.validate(
    query=StreamQuery,
    resp=answers(
        "HTTP_200", "HTTP_404"
    ),  # text/event-stream; 429 past the open streams (api.routes.docs says so)
    tags=["results"],
    operation_id="streamJob",
)
def stream(job_id: str) -> Response:
    """The job as it trains, as Server-Sent Events: `lifecycle` (job events), `progress`,
    `metrics` (every step's points), `traces` (gradient norms per layer, thinned), then
    `end` once the job has ended and everything was sent. Reconnecting with the last `id`
    as Last-Event-ID goes on without a gap or a duplicate, across a worker's restart too.
    The stream closes after `max_seconds`; the client reconnects."""
    asked: StreamQuery = query_model(StreamQuery)
    settings = services().settings
    job = owned_job(job_id)
    release_db()  # the stream reads in short transactions of its own
    cursor = Cursor.parse(request.headers.get("Last-Event-ID") or asked.last_event_id)
    seconds = min(asked.max_seconds or settings.stream_max_seconds, settings.stream_max_seconds)
    slots = services().streams
    if not slots.acquire(blocking=False):
        raise QuotaExceeded(
            f"{settings.stream_max_open} live streams are open on this API process "
            "(TRAINYARD_STREAM_MAX_OPEN); retry shortly, or poll GET /jobs/<id>",
            quota="stream_max_open",
            retry_after=max(1, int(settings.stream_max_seconds / 4)),
        )
    feed = _released(
        _frames(job.id, cursor, seconds=seconds, trace_every=asked.trace_every or 1), slots
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(feed), mimetype="text/event-stream", headers=headers)


def _released(frames: Iterator[str], slots: threading.BoundedSemaphore) -> Iterator[str]:
    """The frames, giving the stream's slot back when the stream ends or the client goes
    (the server closes the iterator then)."""
    try:
        yield from frames
    finally:
        slots.release()


def _frames(
    job_id: uuid.UUID, cursor: Cursor, *, seconds: float, trace_every: int
) -> Iterator[str]:
    svc = services()
    poll = svc.settings.stream_poll_seconds
    deadline = time.monotonic() + seconds
    said = time.monotonic()
    progress: dict[str, Any] | None = None
    yield f"retry: {int(poll * 2000)}\n\n"  # the browser's reconnect delay, in ms
    while True:
        with svc.sessions() as session:
            read = read_feed(session, job_id, cursor, trace_every=trace_every)
        if read is None:
            yield frame("end", {"status": "deleted"})
            return
        for item in read.items:
            cursor = item.cursor
            yield frame(item.kind, item.data, cursor)
        if read.progress != progress:
            progress = read.progress
            yield frame("progress", progress, cursor)
            said = time.monotonic()
        if read.final:
            yield frame("end", {"status": read.status}, cursor)
            return
        if read.items:
            said = time.monotonic()
        now = time.monotonic()
        if now >= deadline:
            return  # the client reconnects with Last-Event-ID
        if now - said >= KEEPALIVE_SECONDS:
            yield ": keepalive\n\n"
            said = now
        time.sleep(min(poll, max(0.0, deadline - now)))
