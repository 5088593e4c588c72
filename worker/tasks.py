"""Thin Celery tasks: claim the job row, run plain training code, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import redis
from celery import Task
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings, get_settings, is_redis_url
from shared.db import make_engine, make_session_factory, session_scope
from shared.db_retry import retry_database
from shared.errors import InvalidTransition, LeaseLost
from shared.infer_inputs import InputLimits, inputs_tensor
from shared.jsonvalues import json_safe_object
from shared.models import Job, JobStatus
from shared.notify import JobEndSignal
from shared.queues import (
    INFER_TASK,
    TRAIN_TASK,
    consumed_queues,
    make_celery,
    send_job,
    send_sweep_pass,
)
from shared.spec import InferSpec, JobSpec
from shared.spec_check import load_stored_spec
from worker import job_inputs
from worker.celery_app import app
from worker.gang import follow_gang, join_gang, lead_gang
from worker.gpu_handoff import hand_to_gpu
from worker.inference import LoadedModel, ModelCache, load_model, predict
from worker.job_log import capture_job_log
from worker.lease_keeper import LeaseKeeper
from worker.messages import user_message
from worker.pruning import prune_reason, stoppers_for
from worker.ranks_job import ClaimedRun, RanksFailed, train_one_node
from worker.shutdown import EXIT_DEADLINE
from worker.sinks import DatabaseSink
from worker.training.alerts import AlertStop
from worker.training.callbacks import Callback, FitResult
from worker.training.device import resolve_device
from worker.training.diagnose import TrainingDiverged
from worker.training.loop import fit
from worker.training.time_limit import TimeLimit

log = logging.getLogger(__name__)


@cache
def _sessions() -> sessionmaker[Session]:
    # Built lazily in the process that runs tasks: an engine must not cross a fork.
    return make_session_factory(make_engine(get_settings().resolved_database_url()))


@app.task(name=TRAIN_TASK, bind=True)
def train(self: Task, job_id: str) -> str:
    """Train one job; the return value is the final status (results are in the database)."""
    delivered_on = (self.request.delivery_info or {}).get("routing_key")
    if hand_to_gpu(
        job_id=uuid.UUID(job_id), delivered_on=delivered_on,
        consumed=consumed_queues(self.app), sessions=_sessions(), settings=get_settings(),
        celery=self.app, redis_client=_broker_client(),
    ):  # fmt: skip
        return "handed to a GPU worker"
    return execute_train(
        uuid.UUID(job_id), worker=worker_name(), sessions=_sessions(), settings=get_settings()
    )


@cache
def _broker_client() -> redis.Redis | None:
    """A client of the Redis broker (presence records), or None with another broker."""
    url = get_settings().resolved_broker_url()
    if not is_redis_url(url):
        return None
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def worker_name() -> str:
    """host:pid (TRAINYARD_WORKER_NAME in place of the host when set), the name a claim
    is held under."""
    return f"{get_settings().worker_name or socket.gethostname()}:{os.getpid()}"


@cache
def _transient_sessions() -> sessionmaker[Session]:
    # Inference rows only: commits that skip the WAL flush (see repository.relax_durability),
    # set once per connection instead of once per transaction.
    url = get_settings().resolved_database_url()
    if not url.startswith("postgresql"):
        return _sessions()
    options = {"options": "-c synchronous_commit=off"}
    return make_session_factory(make_engine(url, connect_args=options))


@cache
def _job_end_signal() -> JobEndSignal:
    return JobEndSignal(get_settings().resolved_broker_url())


@cache
def model_cache() -> ModelCache:
    return ModelCache(get_settings().model_cache_mb * 2**20)


@app.task(name=INFER_TASK)
def infer(job_id: str) -> str:
    """Predict with a trained job's checkpoint; the outputs land in the job's summary."""
    return execute_infer(
        uuid.UUID(job_id),
        worker=worker_name(),
        sessions=_transient_sessions(),
        settings=get_settings(),
        cache=model_cache(),
        ended=_job_end_signal(),
    )


def execute_train(
    job_id: uuid.UUID, *, worker: str, sessions: sessionmaker[Session], settings: Settings
) -> str:
    """queued -> running -> succeeded | failed | cancelled; never leaves a job running.

    The message names a job, but the worker runs the one the claim order puts first in
    that job's queue (priority, then fair share between owners): see claim_for_message.
    """
    seat = join_gang(sessions, job_id, worker, settings)  # a job over several nodes first
    if seat is not None:
        return follow_gang(seat, worker=worker, sessions=sessions, settings=settings)
    job = _claim_turn(sessions, job_id, worker, settings)
    if job is None:
        return "skipped"
    # The lease is short: the heartbeat runs from the claim until the outcome is stored.
    with (
        _heartbeat(sessions, job, worker, settings) as lease,
        capture_job_log(sessions, job.id, attempt=job.attempt,
                        max_lines=settings.job_log_max_lines),
    ):  # fmt: skip
        return _train_claimed(job, worker, sessions, settings, lease)


@contextmanager
def _heartbeat(
    sessions: sessionmaker[Session], job: Job, worker: str, settings: Settings
) -> Iterator[LeaseKeeper]:
    """The claimed job's heartbeat thread, and what a worker stopped past its shutdown
    grace does before it exits: hand the job back without using an attempt (it resumes
    from its last resumable checkpoint)."""
    lease = LeaseKeeper(sessions=sessions, job_id=job.id, worker=worker, settings=settings)
    reason = "the worker was stopped before its step ended; resuming from the last checkpoint"
    lease.start()
    EXIT_DEADLINE.last_words = lambda: _hand_back(sessions, job.id, worker, reason)
    try:
        yield lease
    finally:
        EXIT_DEADLINE.last_words = None
        lease.stop()


def _train_claimed(
    job: Job,
    worker: str,
    sessions: sessionmaker[Session],
    settings: Settings,
    lease: LeaseKeeper,
) -> str:
    job_id = job.id
    status, summary, error = JobStatus.FAILED, None, None
    stoppers: list[Callback] = []
    try:
        spec = load_stored_spec(job.spec, job_id=job_id)
        with sessions() as session:
            initial_state = job_inputs.initial_state(session, spec)
        limit = _time_limit(job, settings)
        resume = retry_database(
            lambda: job_inputs.resume_point(sessions, job_id, worker, attempt=job.attempt),
            what="loading the resume point",
            window_seconds=settings.db_outage_seconds,
        )
        if spec.train.world_size > 1:
            claimed = ClaimedRun(
                job, spec, worker, sessions, settings, lease, limit, resume, initial_state
            )
            ended = _train_distributed(claimed)
            if isinstance(ended, str):
                return ended  # waiting for nodes, or back in the queue after a crash
            result, preempted = ended, lease.requests.preempt
        else:
            sink = DatabaseSink(
                sessions=sessions, job_id=job_id, worker=worker, settings=settings, lease=lease,
                keep_raw_steps=spec.hooks.keep_raw_steps, traced=bool(spec.hooks.kinds),
            )  # fmt: skip
            stoppers = stoppers_for(job, spec, sessions, settings)
            result = fit(
                spec,
                callbacks=[sink, *stoppers] if limit is None else [sink, *stoppers, limit],
                max_params=settings.max_params,
                data_dir=settings.data_dir,
                initial_state=initial_state,
                resume=resume,
                checkpoint_seconds=settings.checkpoint_seconds,
            )
            preempted = sink.preempted
        if result.suspended and not (limit is not None and limit.reached):
            return _requeue(sessions, job, worker, settings, preempted=preempted)
        status, summary, error = _outcome(result, limit, spec)
        reason = prune_reason(stoppers)
        if result.stopped and reason is not None:
            status, error = JobStatus.PRUNED, reason
    except LeaseLost:
        # Another worker holds the job now (or the sweeper ended it): its outcome wins.
        log.warning("job %s: lost the claim while training; stopped", job_id)
        return "lost"
    except Exception as exc:  # the sink kept what was logged before (on_fit_error)
        error = user_message(exc)
        if isinstance(exc, TrainingDiverged) and any(isinstance(s, AlertStop) for s in stoppers):
            status, error = JobStatus.PRUNED, f"non-finite loss: {error}"  # alerts.stop
        else:
            log.exception("job %s failed", job_id)
    if not _finish(sessions, job_id, worker, settings, status=status, summary=summary, error=error):
        return "lost"
    if job.sweep_id is not None:
        wake_sweep(job.sweep_id)
    return str(status)


def wake_sweep(sweep_id: uuid.UUID) -> None:
    """A trial ended: its sweep's controller settles it and starts the next one now, not
    at the sweeper's next look. A send that fails is left to the sweeper."""
    try:
        send_sweep_pass(app, sweep_id=str(sweep_id))
    except Exception:
        log.warning("sweep %s: could not send a controller pass; the sweeper will", sweep_id)


def _train_distributed(run: ClaimedRun) -> FitResult | str:
    """Rank 0's FitResult, or what the task returns when the ranks did not end a fit:
    "waiting" (a gang that did not fill), "cancelled" (while it waited), or "requeued" /
    "failed" after a crash. A rank's own error raises RanksFailed, a lost claim LeaseLost."""
    job, sessions, settings, worker = run.job, run.sessions, run.settings, run.worker
    distributed = run.spec.train.distributed
    assert distributed is not None
    if distributed.nodes > 1:
        gang = lead_gang(run)
        if gang.cancelled:
            ended = _finish(sessions, job.id, worker, settings, status=JobStatus.CANCELLED,
                            summary=None, error=None)  # fmt: skip
            return str(JobStatus.CANCELLED) if ended else "lost"
        if gang.outcome is None:
            return "waiting"
        outcome = gang.outcome
    else:
        outcome = train_one_node(run)
    if outcome.lost:
        raise LeaseLost(f"job {job.id}: a rank saw the claim lost")
    if outcome.crash is not None:
        return _retry_after_crash(sessions, job, worker, settings, outcome.crash)
    if outcome.error is not None or outcome.result is None:
        raise RanksFailed(outcome.error or "rank 0 ended without a result")
    return outcome.result


def _finish(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    worker: str,
    settings: Settings,
    *,
    status: JobStatus,
    summary: dict[str, Any] | None,
    error: str | None,
) -> bool:
    """Record the outcome; False when the claim was lost (another worker's outcome wins).
    Retried through a database outage: the claim stays this worker's while it lasts."""

    def record() -> None:
        with session_scope(sessions) as session:
            repository.finish_job(
                session=session, job_id=job_id, worker=worker, status=status,
                summary=summary, error=error,
            )  # fmt: skip

    try:
        retry_database(
            record, what="recording the outcome", window_seconds=settings.db_outage_seconds
        )
    except InvalidTransition:
        log.warning("job %s: lost the claim before finishing; result dropped", job_id)
        return False
    return True


def _retry_after_crash(
    sessions: sessionmaker[Session], job: Job, worker: str, settings: Settings, reason: str
) -> str:
    """A rank died (or a peer did): the whole group has stopped. With attempts left the
    job goes back to the queue using this attempt, to resume from its last resumable
    checkpoint; without, it fails saying why."""
    log.warning("job %s: distributed training crashed: %s", job.id, reason)

    def back() -> bool:
        with session_scope(sessions) as session:
            return repository.requeue_after_crash(
                session=session, job_id=job.id, worker=worker, max_attempts=settings.max_attempts,
                reason=f"{reason}; back in the queue to resume from its last checkpoint",
            )  # fmt: skip

    if not retry_database(
        back, what="requeueing the job", window_seconds=settings.db_outage_seconds
    ):
        error = f"{reason} (after {job.attempt} attempts)"
        _finish(
            sessions, job.id, worker, settings, status=JobStatus.FAILED, error=error, summary=None
        )
        return str(JobStatus.FAILED)
    _send_again(job, settings, sessions)
    return "requeued"


def _send_again(job: Job, settings: Settings, sessions: sessionmaker[Session]) -> None:
    """A new message for a job back in the queue; a send that fails is left to the sweeper."""
    try:
        with make_celery(settings) as celery:  # rare: a connection of its own is fine
            send_job(celery, job_id=str(job.id), kind=job.kind, queue=job.queue)
        with session_scope(sessions) as session:
            repository.mark_enqueued(session=session, job_id=job.id)
    except Exception:
        log.exception("job %s: requeued, but its message could not be sent", job.id)


def _requeue(
    sessions: sessionmaker[Session],
    job: Job,
    worker: str,
    settings: Settings,
    *,
    preempted: bool,
) -> str:
    """Back to the queue after a resumable checkpoint (the attempt is given back), and a
    new message; a send that fails is left to the sweeper, like any lost message."""
    reason = "preempted" if preempted else "the worker is shutting down"
    retry_database(
        lambda: _hand_back(sessions, job.id, worker, reason),
        what="handing the job back",
        window_seconds=settings.db_outage_seconds,
    )
    _send_again(job, settings, sessions)
    log.info("job %s requeued: %s", job.id, reason)
    return "requeued"


def _hand_back(
    sessions: sessionmaker[Session], job_id: uuid.UUID, worker: str, reason: str
) -> None:
    """running -> queued by this worker, its attempt given back (not a crash)."""
    with session_scope(sessions) as session:
        repository.requeue_job(session=session, job_id=job_id, worker=worker, reason=reason)


def _time_limit(job: Job, settings: Settings) -> TimeLimit | None:
    """The job's wall-clock quota, counting the time since its first start (both stamps
    come from the database's clock at the claim)."""
    if not settings.quota_max_job_seconds:
        return None
    used = 0.0
    if job.started_at is not None and job.heartbeat_at is not None:
        used = max(0.0, (job.heartbeat_at - job.started_at).total_seconds())
    return TimeLimit(limit_seconds=settings.quota_max_job_seconds, used_seconds=used)


def _outcome(
    result: FitResult, limit: TimeLimit | None, spec: JobSpec
) -> tuple[JobStatus, dict[str, Any], str | None]:
    """A fit's final status, summary and error (a suspended fit here hit its time limit)."""
    summary = _summary(result, spec)
    if result.suspended and limit is not None:
        return JobStatus.FAILED, summary, limit.message()
    return (JobStatus.CANCELLED if result.stopped else JobStatus.SUCCEEDED), summary, None


def _claim_turn(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    worker: str,
    settings: Settings,
    *,
    running_quota: bool = True,
) -> Job | None:
    """Claim the job this message's turn goes to in its queue; None when none is waiting.
    `running_quota`: whether TRAINYARD_QUOTA_MAX_RUNNING applies (not to predictions)."""
    max_running = (settings.quota_max_running or None) if running_quota else None

    def claim() -> Job | None:
        with session_scope(sessions) as session:
            return repository.claim_for_message(
                session=session,
                job_id=job_id,
                worker=worker,
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
                max_running_per_owner=max_running,
            )

    job = retry_database(claim, what="claiming a job", window_seconds=settings.db_outage_seconds)
    if job is None:
        log.info("message for job %s: nothing to claim in its queue", job_id)
    elif job.id != job_id:
        log.info("message for job %s: ran job %s first (priority / fair share)", job_id, job.id)
    return job


def _summary(result: FitResult, spec: JobSpec) -> dict[str, Any]:
    distributed = spec.train.distributed
    return json_safe_object(
        {
            "world_size": spec.train.world_size,
            "nodes": distributed.nodes if distributed is not None else 1,
            "batch_size": spec.train.batch_size,
            "global_batch_size": spec.train.global_batch_size,
            "steps": result.steps,
            "epochs": result.epochs,
            "final_loss": result.final_loss,
            "metrics": result.metrics,
            "wall_s": round(result.wall_s, 3),
            "steps_per_s": round(result.steps_per_s, 2),
            "param_count": result.param_count,
            "trainable_count": result.trainable_count,
            "frozen_count": result.param_count - result.trainable_count,
            "stopped_early": result.stopped_early,
            "best_epoch": result.best_epoch,
            "resumed_from_step": result.resumed_from_step,
            "device": result.device,
            "stopped": result.stopped,
        }
    )


def execute_infer(
    job_id: uuid.UUID,
    *,
    worker: str,
    sessions: sessionmaker[Session],
    settings: Settings,
    cache: ModelCache,
    ended: JobEndSignal | None = None,
) -> str:
    """queued -> running -> succeeded | failed, with the predictions as the summary;
    `ended` wakes an API process waiting for the answer.

    As for training, the message is a turn at the inference queue: the worker runs the
    job the claim order puts first (priority, then the owner with the fewest running
    jobs), so one owner's batch of predictions cannot hold every inference worker while
    another owner's waits.
    """
    job = _claim_turn(sessions, job_id, worker, settings, running_quota=False)
    if job is None:
        return "skipped"
    with _heartbeat(sessions, job, worker, settings):  # a cold model load can be long
        return _infer_claimed(job, worker, sessions, settings, cache, ended)


def _infer_claimed(
    job: Job,
    worker: str,
    sessions: sessionmaker[Session],
    settings: Settings,
    cache: ModelCache,
    ended: JobEndSignal | None,
) -> str:
    job_id = job.id
    status, summary, error = JobStatus.FAILED, None, None
    try:
        request = InferSpec.model_validate(job.spec)
        assert request.checkpoint_id is not None, "the API pins the checkpoint"
        loaded = cache.get(request.checkpoint_id)
        warm = loaded is not None
        if loaded is None:
            loaded = load_inference_model(sessions, request)
            cache.put(request.checkpoint_id, loaded)
        inputs = inputs_tensor(request.inputs, loaded.spec.data, InputLimits.of(settings))
        summary = {
            "model_job_id": str(request.model_job_id),
            "checkpoint_id": str(request.checkpoint_id),
            "cached_model": warm,
            **predict(loaded, inputs),
        }
        status = JobStatus.SUCCEEDED
    except Exception as exc:
        log.exception("inference job %s failed", job_id)
        error = user_message(exc)
    if not _finish(sessions, job_id, worker, settings, status=status, summary=summary, error=error):
        return "lost"
    if ended is not None:
        ended.announce(job_id)
    return str(status)


def load_for_inference(request: InferSpec) -> LoadedModel:
    """The serving line's loader: load_inference_model on this process's sessions."""
    return load_inference_model(_sessions(), request)


def record_sessions() -> sessionmaker[Session]:
    """Sessions for the serving line's records: durable commits (they are batched)."""
    return _sessions()


def load_inference_model(sessions: sessionmaker[Session], request: InferSpec) -> LoadedModel:
    """The training job's model with the pinned checkpoint's weights, on this worker's device."""
    with sessions() as session:
        source = repository.get_job(session=session, job_id=request.model_job_id)
        ckpt = repository.get_checkpoint(
            session=session, job_id=source.id, ref=str(request.checkpoint_id)
        )
        spec = load_stored_spec(source.spec, job_id=source.id, loc="model_job_id")
        state = ckpt.model_state
    return load_model(spec, state, resolve_device("auto"))
