"""A job's live stream: Server-Sent Events of its lifecycle events, progress, metric points,
thinned gradient norms and log lines (shared.job_feed, shared by a job's streams through
api.feed_hub), each with the cursor after it as its `id:`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from api.context import db, release_db, services
from api.contract import answers, contract, query_model
from api.feed_hub import Channel, after, covers
from api.metrics import OPEN_STREAMS
from api.ownership import owned_job
from shared.contract.queries import StreamQuery
from shared.errors import QuotaExceeded
from shared.job_feed import Cursor, Item, read_feed, within_tip

bp = Blueprint("stream", __name__)
KEEPALIVE_SECONDS = 15.0


def frame(kind: str, data: dict[str, Any] | str, cursor: Cursor | None = None) -> str:
    """One SSE event: `event:`, `id:` (the cursor after it), one `data:` line of JSON
    (`data` as it is when it is JSON text already)."""
    head = f"event: {kind}\n" + (f"id: {cursor}\n" if cursor is not None else "")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {text}\n\n"


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
    `metrics` (every step's points), `traces` (gradient norms per layer, thinned), `logs`
    (the worker's log lines for the job), then `end` once the job has ended and
    everything was sent. Reconnecting with the last `id`
    as Last-Event-ID goes on without a gap or a duplicate, across a worker's restart too.
    The stream closes after `max_seconds`; the client reconnects."""
    asked: StreamQuery = query_model(StreamQuery)
    settings = services().settings
    job = owned_job(job_id)
    asked_from = Cursor.parse(request.headers.get("Last-Event-ID") or asked.last_event_id)
    cursor = within_tip(db(), job.id, asked_from)
    release_db()  # the stream reads in short transactions of its own
    seconds = min(asked.max_seconds or settings.stream_max_seconds, settings.stream_max_seconds)
    slots = services().streams
    if not slots.acquire(blocking=False):
        raise QuotaExceeded(
            f"{settings.resolved_stream_max_open()} live streams are open on this API process "
            "(TRAINYARD_STREAM_MAX_OPEN); retry shortly, or poll GET /jobs/<id>",
            quota="stream_max_open",
            retry_after=max(1, int(settings.stream_max_seconds / 4)),
        )
    feed = _frames(job.id, cursor, seconds=seconds, trace_every=asked.trace_every or 1)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(stream_with_context(feed), mimetype="text/event-stream", headers=headers)
    # The server closes every answer, streamed to its end, cut by the client, or never
    # started (a HEAD, whose generator never runs): the slot goes back then.
    response.call_on_close(Slot(slots).release)
    return response


class Slot:
    """One open stream's place under TRAINYARD_STREAM_MAX_OPEN, given back exactly once."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self.slots, self.held, self.lock = slots, True, threading.Lock()
        OPEN_STREAMS.inc()

    def release(self) -> None:
        with self.lock:
            held, self.held = self.held, False
        if held:
            self.slots.release()
            OPEN_STREAMS.dec()


def _frames(
    job_id: uuid.UUID, cursor: Cursor, *, seconds: float, trace_every: int
) -> Iterator[str]:
    """The stream's frames: from the job's shared reader (api.feed_hub) once the client's
    cursor is within its buffer, from the database directly until then."""
    svc = services()
    deadline = time.monotonic() + seconds
    yield f"retry: {int(svc.settings.stream_poll_seconds * 2000)}\n\n"  # reconnect delay, ms
    channel = svc.feeds.join(job_id, cursor)
    try:
        yield from _follow(channel, cursor, deadline=deadline, trace_every=trace_every)
    finally:
        svc.feeds.leave(channel)


@dataclass(frozen=True)
class Taken:
    """What a stream took from its channel in one go."""

    items: list[Item]
    position: int
    progress: dict[str, Any] | None
    status: str
    final: bool
    gone: bool
    failed: bool


def _follow(
    channel: Channel, cursor: Cursor, *, deadline: float, trace_every: int
) -> Iterator[str]:
    poll = services().settings.stream_poll_seconds
    position: int | None = None  # the next item of the channel's feed, once within it
    progress: dict[str, Any] | None = None
    said = time.monotonic()
    while True:
        if position is None:
            with channel.changed:
                position = channel.first if covers(channel.base, cursor) else None
        if position is None:  # behind the shared buffer: catch up from the database
            caught = yield from _catch_up(channel.job_id, cursor, trace_every, poll)
            if caught is None:
                return
            sent, cursor = caught != cursor, caught
        else:
            taken = _take(channel, position, min(deadline - time.monotonic(), poll * 4))
            if taken is None:  # the buffer moved on past this client
                position = None
                continue
            position = taken.position
            cursor, progress, sent = yield from _send(taken, cursor, progress, trace_every)
            if taken.gone or taken.final:
                yield frame("end", {"status": "deleted" if taken.gone else taken.status}, cursor)
                return
            if taken.failed:
                return  # the shared reader failed: the client reconnects to a new one
        now = time.monotonic()
        said = now if sent else said
        if now >= deadline:
            return  # the client reconnects with Last-Event-ID
        if now - said >= KEEPALIVE_SECONDS:  # a client that went away is noticed here
            yield ": keepalive\n\n"
            said = now


def _send(
    taken: Taken, cursor: Cursor, progress: dict[str, Any] | None, trace_every: int
) -> Generator[str, None, tuple[Cursor, dict[str, Any] | None, bool]]:
    """The taken items the client lacks (traces thinned), and the progress if it changed;
    the cursor and progress after them, and whether anything was sent."""
    items = thin([i for i in taken.items if after(i, cursor)], trace_every)
    frames = []
    for item in items:
        # The item's cursor is the shared reader's; the client may be further on in the
        # other parts (it caught up on its own): only ever move each part forward.
        cursor = cursor.merged(item.cursor)
        frames.append(frame(item.kind, item.text, cursor))
    if taken.progress is not None and taken.progress != progress:
        progress = taken.progress
        frames.append(frame("progress", progress, cursor))
    if frames:  # one write for what one read brought, not one per event
        yield "".join(frames)
    return cursor, progress, bool(frames)


def _take(channel: Channel, position: int, wait: float) -> Taken | None:
    """The channel's items from `position` on, waiting up to `wait` seconds for some;
    None when the buffer no longer holds `position`. `final` means all were taken."""
    with channel.changed:
        if position == channel.end and not (channel.final or channel.gone or channel.error):
            channel.changed.wait(timeout=max(0.0, wait))
        if position < channel.first:  # trimmed, maybe while this waited
            return None
        return Taken(
            items=channel.items[position - channel.first :], position=channel.end,
            progress=channel.progress, status=channel.status, final=channel.final,
            gone=channel.gone, failed=channel.error is not None,
        )  # fmt: skip


def _catch_up(
    job_id: uuid.UUID, cursor: Cursor, trace_every: int, poll: float
) -> Generator[str, None, Cursor | None]:
    """One read of the database after `cursor`, as frames; the cursor after them, or None
    once the stream has ended (the job ended and all was sent, or it was deleted)."""
    with services().sessions() as session:
        read = read_feed(session, job_id, cursor)
    if read is None:
        yield frame("end", {"status": "deleted"})
        return None
    if read.items:  # thinning keeps the last trace and every other item: the cursor holds
        cursor = read.items[-1].cursor
        yield "".join(frame(i.kind, i.text, i.cursor) for i in thin(read.items, trace_every))
    if read.final:
        yield frame("end", {"status": read.status}, cursor)
        return None
    if not read.items:
        time.sleep(poll)
    return cursor


def thin(items: list[Item], every: int) -> list[Item]:
    """Every `every`-th trace item (and the last one), with all the other items."""
    if every <= 1:
        return items
    traces = [i for i in items if i.kind == "traces"]
    kept = set(map(id, traces[::every]))
    if traces:
        kept.add(id(traces[-1]))
    return [i for i in items if i.kind != "traces" or id(i) in kept]
