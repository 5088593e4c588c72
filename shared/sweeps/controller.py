"""One pass of a sweep's controller, driven by the database: settle the trials whose jobs
ended, then ask Optuna for new trials until `parallel` run or `max_trials` were asked.

A pass holds the sweep's row lock (two passes over one sweep run one after the other) and
is re-entrant: it may die anywhere and the next pass goes on without losing or doubling a
trial. Optuna's writes (ask, tell) commit on their own; the trial rows and jobs commit
with the pass. So a pass that died after `ask` leaves an Optuna trial without a row,
which the next pass adopts (its parameters are in the study); one that died after `tell`
tells again, and Optuna's "already finished" is taken as done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState as OptunaState
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import repository
from shared.config import Settings
from shared.errors import InvalidTransition, QuotaExceeded, TrainyardError
from shared.models import (
    FINAL_STATUSES,
    Job,
    JobStatus,
    Metric,
    Sweep,
    SweepStatus,
    SweepTrial,
    TrialState,
    utcnow,
)
from shared.queues import queue_for_device
from shared.quotas import check_queued_quota
from shared.spec.sweep import SweepSpec
from shared.sweeps.study import distributions, open_study, sampler
from shared.sweeps.trial_specs import trial_spec
from shared.validation import validate_train_spec

log = logging.getLogger(__name__)

# How a trial's job ended -> the trial's state, and what Optuna is told.
ENDED = {
    JobStatus.SUCCEEDED: (TrialState.COMPLETE, OptunaState.COMPLETE),
    JobStatus.PRUNED: (TrialState.PRUNED, OptunaState.PRUNED),
    JobStatus.FAILED: (TrialState.FAILED, OptunaState.FAIL),
    JobStatus.CANCELLED: (TrialState.CANCELLED, OptunaState.FAIL),
}


@dataclass(frozen=True)
class Queued:
    """A trial job the pass committed; its message is sent after the commit."""

    job_id: uuid.UUID
    queue: str


def run_pass(*, session: Session, sweep_id: uuid.UUID, settings: Settings) -> list[Queued]:
    """One controller pass over a sweep (the caller commits, then sends the jobs)."""
    sweep = repository.lock_sweep(session=session, sweep_id=sweep_id)
    if sweep is None or sweep.status != SweepStatus.RUNNING:
        return []
    spec = SweepSpec.model_validate(sweep.spec)
    trials = repository.sweep_trials(session=session, sweep_id=sweep.id)
    url = settings.resolved_database_url()
    study = open_study(spec, sweep.id, url, asked=len(trials))
    sweep.error = None  # a failed earlier pass's message (sweep_task) is history now
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            settle(session, study, spec, trial)
    update_best(sweep, spec, trials)
    if sweep.cancel_requested:
        cancel_sweep(session, study, sweep, trials)
        return []
    queued = propose(session, study, sweep, spec, trials, settings)
    if len(trials) >= spec.max_trials and all(t.state != TrialState.RUNNING for t in trials):
        finish_sweep(session, sweep, trials)
    return queued


def settle(session: Session, study: optuna.Study, spec: SweepSpec, trial: SweepTrial) -> None:
    """A running trial whose job ended: its state, value and stop reason, told to Optuna."""
    job = session.get(Job, trial.job_id) if trial.job_id is not None else None
    if job is not None and job.status not in FINAL_STATUSES:
        return
    state, told = ENDED.get(JobStatus(job.status), ENDED[JobStatus.FAILED]) if job else (
        TrialState.CANCELLED, OptunaState.FAIL
    )  # fmt: skip
    value = final_metric(session, trial.job_id, spec) if job is not None else None
    reason = job.error if job is not None else "its job was deleted"
    if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
        state, told = TrialState.FAILED, OptunaState.FAIL
        reason = f"{spec.metric} was not recorded" if value is None else f"{spec.metric} is {value}"
    tell(study, trial.number, told, value if told == OptunaState.COMPLETE else None)
    trial.state, trial.value, trial.stop_reason = state, value, reason
    trial.finished_at = utcnow()


def tell(study: optuna.Study, number: int, state: OptunaState, value: float | None) -> None:
    """Tell Optuna how a trial ended; a trial already told (a pass that died before its
    commit) is left as it is."""
    try:
        study.tell(number, value if state == OptunaState.COMPLETE else None, state=state)
    except (RuntimeError, ValueError) as exc:
        # A trial already told, or the grid sampler's "stop the study" once the grid is
        # covered (it is said after the trial's state is stored).
        frozen = study.get_trials(deepcopy=False)[number]
        if frozen.state == OptunaState.RUNNING:
            raise
        log.info("sweep %s trial %d: already told (%s)", study.study_name, number, exc)


def final_metric(session: Session, job_id: uuid.UUID | None, spec: SweepSpec) -> float | None:
    """The trial's value: the last recorded point of the sweep's metric."""
    if job_id is None:
        return None
    return session.scalars(
        select(Metric.value)
        .where(
            Metric.job_id == job_id,
            Metric.split == spec.metric_split,
            Metric.name == _stored_name(spec),
        )
        .order_by(Metric.step.desc())
        .limit(1)
    ).first()


def _stored_name(spec: SweepSpec) -> str:
    # The epoch's value: train/loss is stored per step, its epoch mean as train/epoch_loss
    # (at the epoch's last step too), which is what ASHA is told.
    if spec.metric_split == "train":
        return f"epoch_{spec.metric_name.removeprefix('epoch_')}"
    return spec.metric_name


def propose(
    session: Session,
    study: optuna.Study,
    sweep: Sweep,
    spec: SweepSpec,
    trials: list[SweepTrial],
    settings: Settings,
) -> list[Queued]:
    """New trials until `parallel` run or `max_trials` were asked; each proposed spec is
    checked as a submission would be, and one that fails is recorded as invalid."""
    queued: list[Queued] = []
    known = {t.number for t in trials}
    # Trials an earlier pass asked for (or refused) but did not record: adopted first.
    orphans = [t for t in study.get_trials(deepcopy=False) if t.number not in known]
    while len(trials) < spec.max_trials and _running(trials) < spec.parallel:
        try:
            check_queued_quota(session=session, owner=sweep.owner, settings=settings)
        except QuotaExceeded:
            break  # the owner's quota applies to trials too: the next pass tries again
        adopted = orphans.pop(0) if orphans else None
        if adopted is None:
            # One sampler seed per trial number: a seeded sweep proposes the same trials
            # however its trials fall into passes.
            study.sampler = sampler(spec, len(trials))
            asked = study.ask(distributions(spec))
            number, params, told = asked.number, dict(asked.params), OptunaState.RUNNING
        else:
            number, params, told = adopted.number, dict(adopted.params), adopted.state
        trial = SweepTrial(
            sweep_id=sweep.id, number=number, params=params, state=TrialState.RUNNING,
            created_at=utcnow(),
        )  # fmt: skip
        trials.append(trial)
        session.add(trial)
        job = _trial_job(session, study, sweep, spec, trial, settings, told)
        if job is not None:
            queued.append(Queued(job.id, job.queue))
    session.flush()
    return queued


def _trial_job(
    session: Session,
    study: optuna.Study,
    sweep: Sweep,
    spec: SweepSpec,
    trial: SweepTrial,
    settings: Settings,
    told: OptunaState,
) -> Job | None:
    """The trial's queued job, or None with the trial recorded as invalid (its spec was
    refused) or failed (Optuna was told it ended before a pass recorded it)."""
    try:
        checked = validate_train_spec(
            trial_spec(spec, sweep.spec["spec"], trial.params), settings=settings,
            session=session, owner=sweep.owner,
        )  # fmt: skip
    except TrainyardError as exc:
        trial.state, trial.stop_reason, trial.finished_at = (
            TrialState.INVALID, exc.message, utcnow()
        )  # fmt: skip
        tell(study, trial.number, OptunaState.FAIL, None)
        return None
    if told != OptunaState.RUNNING:
        trial.state, trial.finished_at = TrialState.FAILED, utcnow()
        trial.stop_reason = f"Optuna holds it as {told.name.lower()} with no job of its own"
        return None
    init_from = checked.spec.model.init_from
    job = repository.create_job(
        session=session, owner=sweep.owner, kind="train",
        spec=checked.spec.model_dump(mode="json"),
        queue=queue_for_device(checked.spec.train.device), priority=sweep.priority,
        source_job_id=init_from.job_id if init_from is not None else None,
        enqueued_at=utcnow(), sweep_id=sweep.id,
    )  # fmt: skip
    repository.add_event(
        session=session, job_id=job.id, kind="sweep_trial",
        message=f"trial {trial.number} of sweep {sweep.id}", data={"params": trial.params},
    )  # fmt: skip
    trial.job_id = job.id
    return job


def _running(trials: list[SweepTrial]) -> int:
    return sum(t.state == TrialState.RUNNING for t in trials)


def update_best(sweep: Sweep, spec: SweepSpec, trials: list[SweepTrial]) -> None:
    """The best complete trial so far, by the sweep's goal."""
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: t.number,
    )
    if not done:
        return
    sign = 1.0 if spec.goal == "maximize" else -1.0
    best = done[0]
    for trial in done[1:]:  # in trial order: the earliest of equal values stays best
        assert trial.value is not None and best.value is not None
        if sign * trial.value > sign * best.value:
            best = trial
    sweep.best_trial, sweep.best_value = best.number, best.value


def finish_sweep(session: Session, sweep: Sweep, trials: list[SweepTrial]) -> None:
    """Every trial asked and ended: succeeded with a best trial, else failed."""
    if sweep.best_trial is not None:
        sweep.status = SweepStatus.SUCCEEDED
    else:
        sweep.status = SweepStatus.FAILED
        sweep.error = f"none of the {len(trials)} trials completed with a value"
    sweep.finished_at = utcnow()


def cancel_sweep(
    session: Session, study: optuna.Study, sweep: Sweep, trials: list[SweepTrial]
) -> None:
    """Cancel the running trials' jobs and end the sweep; no trial starts afterwards."""
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        if trial.job_id is not None:
            with contextlib.suppress(InvalidTransition):  # it ended meanwhile
                repository.request_cancel(session=session, job_id=trial.job_id)
        trial.state, trial.stop_reason = TrialState.CANCELLED, "the sweep was cancelled"
        trial.finished_at = utcnow()
        tell(study, trial.number, OptunaState.FAIL, None)
    sweep.status, sweep.finished_at = SweepStatus.CANCELLED, utcnow()
