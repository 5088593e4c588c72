"""A job's feed (what GET /jobs/<id>/stream sends) read by a client that keeps its cursor,
while the worker is SIGKILLed mid-job and the job resumes on another: every metric step
and every logged trace step arrives exactly once, with the values the job ends with."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.job_feed import Cursor, Item, read_feed
from shared.models import Job, Metric
from tests.support.fixture_types import NewJob
from tests.worker.test_resume_after_kill import SPEC, STEPS, _fast, kill_mid_job
from worker.tasks import execute_train


class Client(threading.Thread):
    """Reads the feed every few milliseconds until the job has ended and all was read."""

    def __init__(self, sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
        super().__init__(daemon=True)
        self.sessions, self.job_id = sessions, job_id
        self.items: list[Item] = []
        self.done = False

    def run(self) -> None:
        cursor = Cursor()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with self.sessions() as session:
                read = read_feed(session, self.job_id, cursor)
            assert read is not None
            self.items += read.items
            if read.items:
                cursor = read.items[-1].cursor
            if read.final:
                self.done = True
                return
            time.sleep(0.01)


def test_every_step_arrives_once_across_a_killed_worker(
    sessions: sessionmaker[Session], pg_url: str, settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(SPEC).id
    client = Client(sessions, job_id)
    client.start()
    kill_mid_job(sessions, pg_url, job_id, after_step=STEPS // 2)
    sent_before_kill = len(client.items)
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=Job.created_at))
        assert repository.requeue_lost_jobs(session=session, max_attempts=3) == 1
    assert execute_train(job_id, worker="w2", sessions=sessions, settings=_fast(settings)) == (
        "succeeded"
    )
    client.join(60)
    assert client.done and sent_before_kill > 0

    metric_steps = [i.data["step"] for i in client.items if i.kind == "metrics"]
    assert metric_steps == list(range(1, STEPS + 1))  # each step once, in order
    sent: dict[tuple[int, str], Any] = {
        (i.data["step"], key): value
        for i in client.items if i.kind == "metrics"
        for key, value in i.data["values"].items()
    }  # fmt: skip
    with sessions() as session:
        stored = {
            (row.step, f"{row.split}/{row.name}"): row.value
            for row in session.scalars(select(Metric).where(Metric.job_id == job_id))
        }
    assert sent == stored  # what the client saw is what the job ended with
    trace_steps = [i.data["step"] for i in client.items if i.kind == "traces"]
    assert trace_steps == [1, *range(4, STEPS + 1, 4)]  # every_n_steps 4, each once
    event_ids = [i.data["id"] for i in client.items if i.kind == "lifecycle"]
    kinds = [i.data["kind"] for i in client.items if i.kind == "lifecycle"]
    assert event_ids == sorted(set(event_ids))
    with sessions() as session:
        assert kinds == [e.kind for e in repository.list_events(session=session, job_id=job_id)]
