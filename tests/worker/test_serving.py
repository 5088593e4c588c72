"""The serving line's worker side on the real Redis and PostgreSQL: requests popped from
the list, batched into one forward pass per checkpoint, answered over Redis, recorded
afterwards as `infer` jobs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.infer_inputs import InputLimits
from shared.models import Job, JobEvent, utcnow
from shared.serving import (
    PredictCall,
    alive_key,
    decode_reply,
    journal_key,
    reply_key,
    requests_key,
    worker_key,
)
from tests.support.trained import built_model, trained_job
from worker.inference import ModelCache
from worker.prediction_log import PredictionRecorder
from worker.serving import PredictionServer
from worker.serving_journal import Journal
from worker.tasks import load_inference_model


def _call(model_job: uuid.UUID, checkpoint_id: uuid.UUID, inputs: Any) -> PredictCall:
    return PredictCall(
        id=uuid.uuid4(), owner="alice", queue="infer", model_job_id=model_job,
        checkpoint="final", checkpoint_id=checkpoint_id, inputs=inputs, sent_at=utcnow(),
    )  # fmt: skip


def _checkpoint(sessions: sessionmaker[Session], job_id: uuid.UUID) -> uuid.UUID:
    with sessions() as session:
        return repository.checkpoint_id(session=session, job_id=job_id, ref="final")


def _server(
    client: redis.Redis,
    sessions: sessionmaker[Session],
    *,
    max_batch: int = 32,
    wait_ms: float = 2.0,
    flush_seconds: float = 0.05,
    expire_seconds: float = 300.0,
) -> PredictionServer:
    recorder = PredictionRecorder(sessions, flush_seconds=flush_seconds, outage_seconds=5).start()
    return PredictionServer(
        client, queue="infer", worker="w1", cache=ModelCache(2**24),
        load=lambda spec: load_inference_model(sessions, spec), recorder=recorder,
        limits=InputLimits(), max_batch=max_batch, batch_wait_seconds=wait_ms / 1000,
        expire_seconds=expire_seconds,
    )  # fmt: skip


@pytest.fixture()
def model_job(sessions: sessionmaker[Session], clean_db: None) -> uuid.UUID:
    return trained_job(sessions)


def _answers(client: redis.Redis, calls: list[PredictCall]) -> list[tuple[Any, Any]]:
    out = []
    for call in calls:
        got = client.blpop([reply_key(call.id)], timeout=30)
        assert got is not None, f"no answer to {call.id}"
        out.append(decode_reply(got[1]))
    return out


def test_requests_waiting_together_run_as_one_forward_pass_and_equal_the_model(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    torch.manual_seed(1)
    samples = [torch.rand(n, 1, 8, 8) for n in (1, 3, 2, 1)]
    calls = [_call(model_job, checkpoint, x.tolist()) for x in samples]
    bad = _call(model_job, checkpoint, [[0.5] * 7] * 8)  # one row short: this one alone fails
    for call in [*calls[:2], bad, *calls[2:]]:
        redis_client.rpush(requests_key("infer"), call.encode())
    server = _server(redis_client, sessions).start()
    try:
        answers = _answers(redis_client, calls)
        (bad_answer, bad_error), = _answers(redis_client, [bad])  # fmt: skip
        assert server.stats.forward_passes == 1 and server.stats.largest_batch == 7
        assert bad_answer is None and bad_error is not None and "inputs" in bad_error
        with torch.no_grad():
            expected = [built_model()(x) for x in samples]
        for (answer, error), x, logits in zip(answers, samples, expected, strict=True):
            assert error is None and answer["samples"] == x.shape[0]
            assert answer["batch_samples"] == 7 and answer["cached_model"] is False
            got = torch.tensor([o["logits"] for o in answer["outputs"]])
            torch.testing.assert_close(got, logits)  # a batch of 7 rounds like one of n
            assert [o["predicted_class"] for o in answer["outputs"]] == logits.argmax(1).tolist()
        assert redis_client.exists(alive_key("infer"))
        server.recorder.flush(timeout=30)
    finally:
        server.stop()
        server.recorder.close(timeout=30)
    with sessions() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.kind == "infer"))}
        events = session.scalars(select(JobEvent).where(JobEvent.kind == "served")).all()
    assert set(jobs) == {c.id for c in [*calls, bad]} and len(events) == 5
    for call, (answer, _) in zip(calls, answers, strict=True):
        job = jobs[call.id]
        assert job.status == "succeeded" and job.summary == answer and job.owner == "alice"
        assert job.spec["checkpoint_id"] == str(checkpoint) and job.source_job_id == model_job
        assert job.created_at <= job.started_at <= job.finished_at
    assert jobs[bad.id].status == "failed" and jobs[bad.id].error == bad_error


def test_a_request_older_than_the_expiry_is_recorded_failed_without_running(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    stale = _call(model_job, checkpoint, [[[0.0] * 8] * 8])
    stale = stale.model_copy(update={"sent_at": stale.sent_at - timedelta(minutes=10)})
    fresh = _call(model_job, checkpoint, [[[[0.5] * 8] * 8]] * 2)
    for call in (stale, fresh):
        redis_client.rpush(requests_key("infer"), call.encode())
    server = _server(redis_client, sessions, expire_seconds=60).start()
    try:
        (stale_answer, stale_error), (fresh_answer, fresh_error) = _answers(
            redis_client, [stale, fresh]
        )
        assert stale_answer is None and stale_error is not None
        assert "TRAINYARD_PREDICT_EXPIRE_SECONDS (60)" in stale_error
        assert fresh_error is None and fresh_answer["samples"] == 2
        assert server.stats.expired == 1 and server.stats.largest_batch == 2  # not run
        server.recorder.flush(timeout=30)
    finally:
        server.stop()
        server.recorder.close(timeout=30)
    with sessions() as session:
        record = session.get(Job, stale.id)
    assert record is not None and record.status == "failed" and record.error == stale_error


def test_without_batching_every_request_is_its_own_forward_pass(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    calls = [_call(model_job, checkpoint, [[[0.25] * 8] * 8]) for _ in range(4)]
    for call in calls:
        redis_client.rpush(requests_key("infer"), call.encode())
    server = _server(redis_client, sessions, max_batch=1).start()
    try:
        answers = _answers(redis_client, calls)
    finally:
        server.stop()
        server.recorder.close(timeout=30)
    assert server.stats.forward_passes == 4 and server.stats.largest_batch == 1
    # The first loaded the model; those that came while it loaded waited for that load.
    assert answers[0][0]["cached_model"] is False


def test_a_cold_checkpoint_loads_aside_while_warm_models_are_served(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    warm_ckpt = _checkpoint(sessions, model_job)
    cold_job = trained_job(sessions)
    cold_ckpt = _checkpoint(sessions, cold_job)
    gate = threading.Event()

    def load(spec: Any) -> Any:
        if spec.checkpoint_id == cold_ckpt:
            assert gate.wait(30), "the test never let the cold load finish"
        return load_inference_model(sessions, spec)

    recorder = PredictionRecorder(sessions, flush_seconds=0.05, outage_seconds=5).start()
    server = PredictionServer(
        redis_client, queue="infer", worker="w1", cache=ModelCache(2**24), load=load,
        recorder=recorder, limits=InputLimits(), max_batch=32, batch_wait_seconds=0.002,
    ).start()  # fmt: skip
    sample = [[[0.25] * 8] * 8]
    try:
        first = _call(model_job, warm_ckpt, sample)
        redis_client.rpush(requests_key("infer"), first.encode())
        _answers(redis_client, [first])  # the warm model is in the cache now
        cold = [_call(cold_job, cold_ckpt, sample) for _ in range(2)]
        redis_client.rpush(requests_key("infer"), cold[0].encode())
        warm = _call(model_job, warm_ckpt, sample)
        redis_client.rpush(requests_key("infer"), warm.encode(), cold[1].encode())
        # Answered while the cold checkpoint's load is held up.
        ((answer, error),) = _answers(redis_client, [warm])
        assert error is None and answer["cached_model"] is True
        assert not any(redis_client.exists(reply_key(c.id)) for c in cold)
        gate.set()
        for answer, error in _answers(redis_client, cold):  # both waited for the one load
            assert error is None and answer["cached_model"] is False
        assert server.stats.requests == 4 and server.stats.errors == 0
    finally:
        gate.set()
        server.stop()
        recorder.close(timeout=30)


def test_concurrent_callers_are_batched_and_each_gets_its_own_answer(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    server = _server(redis_client, sessions, wait_ms=50).start()
    results: dict[int, Any] = {}

    def caller(i: int) -> None:
        call = _call(model_job, checkpoint, [[[i / 16] * 8] * 8])
        redis_client.rpush(requests_key("infer"), call.encode())  # the pool is thread-safe
        results[i] = _answers(redis_client, [call])[0]

    try:
        _answers(redis_client, [_warm(redis_client, model_job, checkpoint)])
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        server.stop()
        server.recorder.close(timeout=30)
    assert server.stats.forward_passes < 1 + 8  # some of the 8 shared a pass
    with torch.no_grad():
        for i, (answer, error) in results.items():
            logits = built_model()(torch.full((1, 1, 8, 8), i / 16))
            assert error is None
            torch.testing.assert_close(torch.tensor(answer["outputs"][0]["logits"]), logits[0])


def _warm(client: redis.Redis, model_job: uuid.UUID, checkpoint: uuid.UUID) -> PredictCall:
    call = _call(model_job, checkpoint, [[[0.0] * 8] * 8])
    client.rpush(requests_key("infer"), call.encode())
    return call


def test_a_batch_the_database_refuses_is_written_again(
    sessions: sessionmaker[Session], model_job: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    real = repository.record_served
    fails = [RuntimeError("refused once")]

    def flaky(**kwargs: Any) -> None:
        if fails:
            raise fails.pop()
        real(**kwargs)

    monkeypatch.setattr(repository, "record_served", flaky)
    monkeypatch.setattr("worker.prediction_log._RETRY_PAUSE_SECONDS", 0.01)
    recorder = PredictionRecorder(sessions, flush_seconds=0.01, outage_seconds=5).start()
    call = _call(model_job, checkpoint, [[[0.0] * 8] * 8])
    now = utcnow()
    recorder.add(
        repository.ServedPrediction(
            call=call, answer={"samples": 1}, error=None, worker="w", started_at=now,
            finished_at=now, batch_samples=1,
        )
    )  # fmt: skip
    assert recorder.flush(timeout=30)
    recorder.close(timeout=5)
    assert recorder.failed_batches == 1 and recorder.written == 1
    with sessions() as session:
        assert session.get(Job, call.id) is not None


def test_a_record_the_database_always_refuses_is_left_out_and_the_rest_written(
    sessions: sessionmaker[Session], model_job: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    calls = [_call(model_job, checkpoint, [[[0.0] * 8] * 8]) for _ in range(3)]
    poison = calls[1].id
    real = repository.record_served

    def refusing(**kwargs: Any) -> None:
        if any(s.call.id == poison for s in kwargs["served"]):
            raise RuntimeError("refused")
        real(**kwargs)

    monkeypatch.setattr(repository, "record_served", refusing)
    monkeypatch.setattr("worker.prediction_log._RETRY_PAUSE_SECONDS", 0.0)
    recorder = PredictionRecorder(sessions, flush_seconds=0.01, outage_seconds=5)
    now = utcnow()
    for call in calls:  # buffered before the thread starts: one batch of three
        recorder.add(
            repository.ServedPrediction(
                call=call, answer={"samples": 1}, error=None, worker="w", started_at=now,
                finished_at=now, batch_samples=1,
            )
        )  # fmt: skip
    recorder.start()
    assert recorder.flush(timeout=30)
    recorder.close(timeout=5)
    assert recorder.written == 2 and recorder.dropped == 1
    with sessions() as session:
        stored = set(session.scalars(select(Job.id).where(Job.kind == "infer")))
    assert stored == {calls[0].id, calls[2].id}


def test_a_stopped_server_closes_its_line(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    server = _server(redis_client, sessions).start()
    deadline = time.monotonic() + 30
    while not redis_client.exists(alive_key("infer")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server.stop() is True
    server.recorder.close(timeout=5)
    assert not redis_client.exists(alive_key("infer"))  # the API takes the job path at once


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    left = {t.name for t in threading.enumerate()} - before
    assert not {n for n in left if n.startswith("serve-")}, left


def _served(call: PredictCall, worker: str) -> repository.ServedPrediction:
    now = utcnow()
    return repository.ServedPrediction(
        call=call, answer={"samples": 1, "outputs": [{"predicted_class": 3}]}, error=None,
        worker=worker, started_at=now, finished_at=now, batch_samples=1,
    )  # fmt: skip


def test_records_of_answers_outlive_a_worker_killed_before_writing_them(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    calls = [_call(model_job, checkpoint, [[[0.25] * 8] * 8]) for _ in range(2)]
    journal = Journal(redis_client, "w1")
    # A recorder that would write only an hour later: the worker dies before it does.
    recorder = PredictionRecorder(
        sessions, flush_seconds=3600, outage_seconds=5, on_done=journal.done
    ).start()
    server = PredictionServer(
        redis_client, queue="infer", worker="w1", cache=ModelCache(2**24),
        load=lambda spec: load_inference_model(sessions, spec), recorder=recorder,
        limits=InputLimits(), max_batch=32, batch_wait_seconds=0.002, journal=journal,
    ).start()  # fmt: skip
    for call in calls:
        redis_client.rpush(requests_key("infer"), call.encode())
    answers = _answers(redis_client, calls)
    server.stop()  # as a kill: nothing more is written by this worker
    assert all(error is None for _, error in answers)
    assert redis_client.hlen(journal_key("w1")) == 2  # journaled with the answers
    assert not [j for j in _infer_jobs(sessions)]
    # The worker starts again: its journal is written, then emptied.
    again = Journal(redis_client, "w1")
    restarted = PredictionRecorder(
        sessions, flush_seconds=0.01, outage_seconds=5, on_done=again.done
    ).start()
    for record in again.recover():
        restarted.add(record)
    assert restarted.flush(timeout=30)
    restarted.close(timeout=5)
    recorder.close(timeout=5)
    jobs = {j.id: j for j in _infer_jobs(sessions)}
    assert set(jobs) == {c.id for c in calls}
    assert [jobs[c.id].summary for c in calls] == [answer for answer, _ in answers]
    assert redis_client.hlen(journal_key("w1")) == 0


def test_a_worker_adopts_the_journal_of_one_that_stopped_serving(
    redis_client: redis.Redis, sessions: sessionmaker[Session], model_job: uuid.UUID
) -> None:
    checkpoint = _checkpoint(sessions, model_job)
    gone, busy = _call(model_job, checkpoint, [0.0]), _call(model_job, checkpoint, [1.0])
    for worker, call in (("gone", gone), ("busy", busy)):
        Journal(redis_client, worker).add([_served(call, worker)])
    redis_client.set(worker_key("busy"), 1, px=60_000)  # still serving: not adopted
    mine = Journal(redis_client, "w2")
    adopted = mine.adopt()
    assert [r.call.id for r in adopted] == [gone.id]
    assert not redis_client.exists(journal_key("gone"))
    assert redis_client.hlen(journal_key("busy")) == 1 and mine.adopt() == []
    recorder = PredictionRecorder(
        sessions, flush_seconds=0.01, outage_seconds=5, on_done=mine.done
    ).start()
    for record in adopted:
        recorder.add(record)
    assert recorder.flush(timeout=30)
    recorder.close(timeout=5)
    with sessions() as session:
        record = session.get(Job, gone.id)
    assert record is not None and record.status == "succeeded" and record.worker == "gone"
    assert redis_client.hlen(journal_key("w2")) == 0


def _infer_jobs(sessions: sessionmaker[Session]) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == "infer")))
