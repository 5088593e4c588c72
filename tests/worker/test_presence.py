"""A worker's presence (real Redis): the record other processes read, the heartbeat file
a container healthcheck reads, and the hand-off of young `auto` jobs to an idle GPU."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main as cli
from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, JobEvent
from shared.presence import heartbeat_age, read_workers, rows_written
from shared.queues import QUEUE_CPU, QUEUE_DEFAULT, QUEUE_GPU, make_celery
from tests.support.servers import REDIS_URL
from worker import activity
from worker.gpu_handoff import hand_to_gpu
from worker.presence import Presence


class FakeKeeper:
    """What presence reads of a lease keeper: a job id and the step it reported."""

    def __init__(self, step: int = 0) -> None:
        self.job_id = str(uuid.uuid4())
        self.step = step


def presence(client: redis.Redis, queues: list[str], beat_file: Path | None) -> Presence:
    return Presence(client=client, name=f"host:{uuid.uuid4().hex[:6]}", queues=queues,
                    heartbeat_file=beat_file, every_seconds=5.0)  # fmt: skip


def test_a_beat_publishes_what_the_worker_does_and_touches_the_file(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    beat_file = tmp_path / "beat"
    gpu = presence(redis_client, [QUEUE_DEFAULT, QUEUE_GPU], beat_file)
    keeper = FakeKeeper(step=10)
    activity.take_committed()  # counts left by earlier tests in this process
    gpu.beat()
    (record,) = read_workers(redis_client)
    assert (record.device, record.busy, record.jobs) == ("cuda", False, {})
    assert heartbeat_age(beat_file) is not None and heartbeat_age(beat_file) < 5
    assert [(r.device, r.busy) for r in read_workers(redis_client)] == [("cuda", False)]

    activity.job_started(keeper)
    activity.rows_committed({"layer_traces": 1200})
    activity.rows_committed({"metrics": 7})
    try:
        gpu.beat()
        time.sleep(0.2)
        keeper.step = 30
        gpu.beat()
    finally:
        activity.job_ended(keeper)
    (record,) = read_workers(redis_client)
    assert record.busy and record.jobs == {keeper.job_id: 30}
    assert 0 < record.steps_per_second[keeper.job_id] <= 20 / 0.2
    assert [(r.device, r.busy) for r in read_workers(redis_client)] == [("cuda", True)]
    assert rows_written(redis_client) == {"layer_traces": 1200, "metrics": 7}
    # Three beats: a dead worker's record goes by itself.
    ttl = int(redis_client.ttl(f"trainyard:worker:{gpu.name}"))  # type: ignore[arg-type]
    assert 0 < ttl <= 15

    gpu.stop()
    assert read_workers(redis_client) == []


def test_no_broker_no_touch_and_no_lost_counts(tmp_path: Path) -> None:
    beat_file = tmp_path / "beat"
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    worker = presence(dead, [QUEUE_DEFAULT, QUEUE_CPU], beat_file)
    activity.take_committed()
    activity.rows_committed({"metrics": 5})
    with pytest.raises(redis.RedisError):
        worker.beat()
    assert heartbeat_age(beat_file) is None  # the healthcheck sees the outage
    assert activity.take_committed() == {"metrics": 5}  # kept for the next beat


def test_the_healthcheck_reads_the_heartbeat_age(tmp_path: Path) -> None:
    beat_file = tmp_path / "beat"
    env = {"TRAINYARD_HEARTBEAT_FILE": str(beat_file)}
    from shared.config import get_settings

    def check(*args: str) -> tuple[int, str]:
        get_settings.cache_clear()
        try:
            out = CliRunner().invoke(cli, ["health", "heartbeat", *args], env=env)
        finally:
            get_settings.cache_clear()
        return out.exit_code, out.output

    code, said = check()
    assert code == 1 and "no heartbeat yet" in said
    beat_file.touch()
    assert check()[0] == 0
    old = time.time() - 120
    os.utime(beat_file, (old, old))
    code, said = check("--max-age", "60")
    assert code == 1 and "last heartbeat 120 s ago" in said


# --- device auto prefers an idle GPU ---------------------------------------------------------


@pytest.fixture()
def handoff(
    sessions: sessionmaker[Session], redis_client: redis.Redis, clean_db: None, pg_url: str
) -> Callable[..., bool]:
    settings = Settings(database_url=pg_url, broker_url=REDIS_URL, auto_gpu_wait_seconds=10)
    celery = make_celery(settings)

    def run(job_id: uuid.UUID, *, consumed: tuple[str, ...] = (QUEUE_DEFAULT, QUEUE_CPU),
            delivered_on: str = QUEUE_DEFAULT) -> bool:  # fmt: skip
        return hand_to_gpu(
            job_id=job_id, delivered_on=delivered_on, consumed=consumed, sessions=sessions,
            settings=settings, celery=celery, redis_client=redis_client,
        )  # fmt: skip

    return run


def _auto_job(sessions: sessionmaker[Session], *, world_size: int = 1, nodes: int = 1) -> uuid.UUID:
    distributed = {"world_size": world_size, "nodes": nodes}
    spec = {"train": {"device": "auto", "distributed": distributed}}
    with session_scope(sessions) as session:
        job = repository.create_job(session=session, owner="o", kind="train", spec=spec,
                                    queue=QUEUE_DEFAULT)  # fmt: skip
        return job.id


def test_an_auto_job_goes_to_an_idle_gpu_once_and_only_while_young(
    handoff: Callable[..., bool], sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    job_id = _auto_job(sessions)
    assert not handoff(job_id)  # no GPU worker alive
    gpu = presence(redis_client, [QUEUE_DEFAULT, QUEUE_GPU], None)
    gpu.beat()
    assert not handoff(job_id, consumed=(QUEUE_DEFAULT, QUEUE_GPU))  # a GPU worker runs it
    assert not handoff(job_id, delivered_on=QUEUE_CPU)  # not an auto job's message
    assert redis_client.llen(QUEUE_GPU) == 0

    assert handoff(job_id)
    (message,) = redis_client.lrange(QUEUE_GPU, 0, -1)
    assert json.loads(message)["headers"]["argsrepr"] == repr([str(job_id)])
    with sessions() as session:
        events = [e.kind for e in session.query(JobEvent).filter_by(job_id=job_id)]
    assert "offered" in events

    with session_scope(sessions) as session:  # 11 s later: too old to be handed over again
        created = session.get(Job, job_id).created_at  # type: ignore[union-attr]
        session.execute(
            update(Job).where(Job.id == job_id).values(created_at=created - timedelta(seconds=11))
        )
    assert not handoff(job_id)


def test_busy_gpus_and_gangs_keep_auto_jobs_where_they_are(
    handoff: Callable[..., bool], sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    gpu = presence(redis_client, [QUEUE_DEFAULT, QUEUE_GPU], None)
    keeper = FakeKeeper()
    activity.job_started(keeper)
    try:
        gpu.beat()
    finally:
        activity.job_ended(keeper)
    assert not handoff(_auto_job(sessions))  # the only GPU worker is busy
    gpu.beat()  # idle now
    assert not handoff(_auto_job(sessions, world_size=2, nodes=2))  # a gang: its own queue
    assert not handoff(_auto_job(sessions, world_size=2))  # two GPUs wanted; it drives one
    assert handoff(_auto_job(sessions))
    # Reserved for that job until its beats say busy: a second hand-off finds none idle.
    assert not handoff(_auto_job(sessions))
    assert redis_client.llen(QUEUE_GPU) == 1


def test_a_worker_in_a_train_task_or_shutting_down_is_not_idle(redis_client: redis.Redis) -> None:
    from worker.shutdown import SHUTTING_DOWN

    gpu = presence(redis_client, [QUEUE_DEFAULT, QUEUE_GPU], None)
    activity.task_started()  # a train task that runs no lease of its own (a gang follower)
    try:
        assert gpu.record().busy
    finally:
        activity.task_ended()
    assert not gpu.record().busy
    SHUTTING_DOWN.set()
    try:
        assert gpu.record().busy
    finally:
        SHUTTING_DOWN.clear()


def test_a_hand_off_that_cannot_read_the_database_leaves_the_turn_here(
    redis_client: redis.Redis, sessions: sessionmaker[Session], clean_db: None
) -> None:
    from shared.db import make_engine, make_session_factory

    presence(redis_client, [QUEUE_DEFAULT, QUEUE_GPU], None).beat()
    job_id = _auto_job(sessions)
    gone = make_session_factory(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    settings = Settings(broker_url=REDIS_URL, auto_gpu_wait_seconds=10)
    handed = hand_to_gpu(
        job_id=job_id, delivered_on=QUEUE_DEFAULT, consumed=(QUEUE_DEFAULT, QUEUE_CPU),
        sessions=gone, settings=settings, celery=make_celery(settings),
        redis_client=redis_client,
    )  # fmt: skip
    assert handed is False and redis_client.llen(QUEUE_GPU) == 0


def test_a_gpu_worker_refuses_to_start_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cli import serve

    ok, said = serve.cuda_available()  # asked of torch in a child process
    assert ok == torch.cuda.is_available()
    assert said.endswith(f"torch {torch.__version__}, CUDA {torch.version.cuda}"), said
    monkeypatch.setattr(serve, "cuda_available", lambda: (False, "0 CUDA device(s), torch x"))
    monkeypatch.setattr(os, "execv", lambda *_: pytest.fail("started without CUDA"))
    out = CliRunner().invoke(cli, ["worker", "--gpu"])
    assert out.exit_code == 1
    assert "a GPU worker needs CUDA, and torch sees none (0 CUDA device(s)" in out.output
    assert serve.default_queues(gpu=True) == [QUEUE_DEFAULT, QUEUE_GPU]
    assert serve.default_queues(gpu=False) == [QUEUE_DEFAULT, QUEUE_CPU]
