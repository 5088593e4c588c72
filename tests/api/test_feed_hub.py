"""The streams of one job share one reader (api.feed_hub), on the real PostgreSQL: each
client still gets every step once and in order, a client that joins late or falls behind
the shared buffer catches up from the database, and the reader stops with the job."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

import api.feed_hub
import api.routes.stream
from cli.stream import parse
from shared.db import session_scope
from shared.models import Job, JobStatus, Metric
from tests.support.fixture_types import NewJob

STEPS = 40


class Reads:
    """Counts the feed reads of the shared readers and of streams catching up."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.shared = self.catch_up = 0
        real = api.feed_hub.read_feed

        def shared(*args: Any, **kwargs: Any) -> Any:
            self.shared += 1
            return real(*args, **kwargs)

        def catch_up(*args: Any, **kwargs: Any) -> Any:
            self.catch_up += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(api.feed_hub, "read_feed", shared)
        monkeypatch.setattr(api.routes.stream, "read_feed", catch_up)


def stream_steps(app: Flask, headers: dict[str, str], job_id: uuid.UUID) -> list[int]:
    """Every metric step one client is sent, reconnecting with its last id until `end`."""
    steps: list[int] = []
    last: str | None = None
    deadline = time.monotonic() + 120
    client = app.test_client()
    while time.monotonic() < deadline:
        sent = {**headers, **({"Last-Event-ID": last} if last else {})}
        resp = client.get(f"/api/v1/jobs/{job_id}/stream?max_seconds=2", headers=sent,
                          buffered=False)  # fmt: skip
        assert resp.status_code == 200
        ended = False
        for event in parse(resp.response):
            last = event.id or last
            if event.kind == "metrics":
                steps.append(event.data["step"])
            ended = ended or event.kind == "end"
        resp.close()
        if ended:
            return steps
    raise AssertionError(f"no end event within 120 s; steps so far {steps[-5:]}")


def write_steps(sessions: sessionmaker[Session], job_id: uuid.UUID, steps: range) -> None:
    for step in steps:
        with session_scope(sessions) as session:
            row = {"job_id": job_id, "split": "train", "name": "loss", "step": step,
                   "epoch": 1, "value": 1 / step}  # fmt: skip
            session.execute(insert(Metric), [row])
        time.sleep(0.02)


def finish(sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED))


def start_running(sessions: sessionmaker[Session], new_job: NewJob, owner: str) -> uuid.UUID:
    job_id = new_job(owner=owner).id
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.RUNNING))
    return job_id


def test_three_streams_of_a_job_share_one_reader_and_each_gets_every_step_once(
    app: Flask, alice: dict[str, str], sessions: sessionmaker[Session], new_job: NewJob,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    reads = Reads(monkeypatch)
    job_id = start_running(sessions, new_job, "alice")
    results: list[list[int]] = [[] for _ in range(3)]
    clients = [
        threading.Thread(target=lambda i=i: results[i].extend(stream_steps(app, alice, job_id)))
        for i in range(3)
    ]
    for client in clients:
        client.start()
    hub = app.extensions["trainyard"].feeds
    deadline = time.monotonic() + 30
    while hub.open() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.open() == 3 and len(hub.channels) == 1
    write_steps(sessions, job_id, range(1, STEPS + 1))
    finish(sessions, job_id)
    for client in clients:
        client.join(timeout=150)
    assert results == [list(range(1, STEPS + 1))] * 3
    assert reads.catch_up == 0  # all three started where the shared reader did
    assert reads.shared > 0


def test_a_client_behind_the_shared_buffer_catches_up_from_the_database(
    app: Flask, alice: dict[str, str], sessions: sessionmaker[Session], new_job: NewJob,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(api.feed_hub, "MAX_BUFFERED", 5)
    reads = Reads(monkeypatch)
    job_id = start_running(sessions, new_job, "alice")
    first: list[int] = []
    early = threading.Thread(target=lambda: first.extend(stream_steps(app, alice, job_id)))
    early.start()
    write_steps(sessions, job_id, range(1, STEPS // 2 + 1))
    # The buffer keeps 5 items: a client from the start is far behind it.
    late: list[int] = []
    behind = threading.Thread(target=lambda: late.extend(stream_steps(app, alice, job_id)))
    behind.start()
    write_steps(sessions, job_id, range(STEPS // 2 + 1, STEPS + 1))
    finish(sessions, job_id)
    early.join(timeout=150)
    behind.join(timeout=150)
    assert first == list(range(1, STEPS + 1))
    assert late == list(range(1, STEPS + 1))
    assert reads.catch_up > 0


def test_the_reader_stops_with_the_job(
    app: Flask, alice: dict[str, str], sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    job_id = start_running(sessions, new_job, "alice")
    write_steps(sessions, job_id, range(1, 4))
    finish(sessions, job_id)
    assert stream_steps(app, alice, job_id) == [1, 2, 3]
    hub = app.extensions["trainyard"].feeds
    deadline = time.monotonic() + 10
    while hub.channels and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.channels == {} and hub.open() == 0


def test_a_stream_is_sent_as_it_goes_not_when_it_closes(
    app: Flask, alice: dict[str, str], sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    """The app checks its answers against the contract here (check_responses): a check
    that read the whole body would hold the first frame back until the stream closed, and
    this stream would then end at its deadline without the job's end."""
    job_id = start_running(sessions, new_job, "alice")
    resp = app.test_client().get(
        f"/api/v1/jobs/{job_id}/stream?max_seconds=60", headers=alice, buffered=False
    )
    chunks = iter(resp.response)
    assert next(chunks)  # the first frame, while the job still runs
    write_steps(sessions, job_id, range(1, 3))
    finish(sessions, job_id)
    events = list(parse(chunks))
    resp.close()
    assert [e.data["step"] for e in events if e.kind == "metrics"] == [1, 2]
    assert events[-1].kind == "end" and events[-1].data["status"] == "succeeded"


def test_a_cursor_past_what_the_job_wrote_is_brought_back_to_it(
    app: Flask, alice: dict[str, str], sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    """A made-up Last-Event-ID must not pin the shared reader beyond the job's rows (every
    later stream would have to read the database itself, for ever)."""
    job_id = start_running(sessions, new_job, "alice")
    write_steps(sessions, job_id, range(1, 4))
    hub = app.extensions["trainyard"].feeds
    resp = app.test_client().get(
        f"/api/v1/jobs/{job_id}/stream?max_seconds=1",
        headers={**alice, "Last-Event-ID": "99.99999999999999999999.999999.999999"},
    )
    assert resp.status_code == 200
    assert "event: metrics" not in resp.get_data(as_text=True)  # it has every step there is
    channel = hub.channels.get(job_id)  # still there for a while after its last stream
    assert channel is not None and channel.base.metric == 3 and channel.base.log == 0
    write_steps(sessions, job_id, range(4, 6))
    finish(sessions, job_id)
    assert stream_steps(app, alice, job_id) == [1, 2, 3, 4, 5]


def test_a_head_request_gives_its_stream_slot_back(
    app: Flask, alice: dict[str, str], sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    job_id = start_running(sessions, new_job, "alice")
    settings = app.extensions["trainyard"].settings
    client = app.test_client()
    for _ in range(settings.resolved_stream_max_open() + 2):
        resp = client.head(f"/api/v1/jobs/{job_id}/stream", headers=alice)
        assert resp.status_code == 200
        resp.close()  # as a WSGI server closes a HEAD's body, unread
    slots = app.extensions["trainyard"].streams
    held = 0
    while slots.acquire(blocking=False):
        held += 1
    for _ in range(held):
        slots.release()
    assert held == settings.resolved_stream_max_open()
