"""Stopping a job early as `pruned`: its own gradient rules (hooks.alerts with stop), and
for a sweep trial under ASHA, the sweep's pruner asked at every epoch's end.

The trial reports its metric to its Optuna trial and asks `should_prune` itself, at the
epoch's end and before its next step: the decision is then made on exactly the values
that the earlier trials reported at that rung, so a seeded sweep on one worker makes the
same decisions every time, and a trial is never past a rung it should have stopped at.
"""

from __future__ import annotations

import logging
import uuid

import optuna
import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from shared import repository
from shared.config import Settings
from shared.models import Job
from shared.spec import JobSpec
from shared.spec.sweep import SweepSpec
from shared.sweeps.study import open_study, study_storage
from worker.training.alerts import AlertStop
from worker.training.callbacks import Callback

log = logging.getLogger(__name__)


class SweepRungs(Callback):
    """ASHA for one sweep trial: report the metric at each epoch's end, stop when pruned."""

    def __init__(self, trial: optuna.trial.Trial, sweep: SweepSpec) -> None:
        self.trial = trial
        self.sweep = sweep
        self.total_steps = 0
        self.reason: str | None = None
        split, name = sweep.metric_split, sweep.metric_name
        self.key = f"{split}_{name.removeprefix('epoch_')}"  # fit()'s epoch metric names

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        self.total_steps = total_steps

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.key)
        if value is None or self.reason is not None or not self.total_steps:
            return
        try:
            self.trial.report(value, epoch)  # a resumed epoch reported again is ignored
            # At the last epoch the trial has done its work: it completes with this value.
            prune = step < self.total_steps and self.trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            # The controller ended the trial (its sweep was cancelled): the job's own
            # cancel request stops it; nothing more is reported.
            self.total_steps = 0
            return
        if prune:
            asha = self.sweep.early_stop.asha if self.sweep.early_stop else None
            factor = asha.reduction_factor if asha else "?"
            self.reason = (
                f"ASHA: {self.sweep.metric} {value:.4g} at epoch {epoch} is not in the best "
                f"1/{factor} of the trials at this rung"
            )

    def should_stop(self) -> bool:
        return self.reason is not None


def stoppers_for(
    job: Job, spec: JobSpec, sessions: sessionmaker[Session], settings: Settings
) -> list[Callback]:
    """The callbacks that may prune this job: its alerts with stop, its sweep's ASHA."""
    stoppers: list[Callback] = []
    if spec.hooks.alerts is not None and spec.hooks.alerts.stop:
        stoppers.append(AlertStop())
    if job.sweep_id is not None:
        rungs = _sweep_rungs(job.id, job.sweep_id, sessions, settings)
        if rungs is not None:
            stoppers.append(rungs)
    return stoppers


def _sweep_rungs(
    job_id: uuid.UUID,
    sweep_id: uuid.UUID,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> SweepRungs | None:
    with sessions() as session:
        sweep_row = repository.get_sweep(session=session, sweep_id=sweep_id)
        trial_row = repository.trial_of_job(session=session, job_id=job_id)
        sweep = SweepSpec.model_validate(sweep_row.spec)
        if trial_row is None or sweep.early_stop is None or sweep.early_stop.asha is None:
            return None
        number = trial_row.number
    study = open_study(sweep, sweep_id, settings.resolved_database_url())
    storage = study_storage(settings.resolved_database_url())
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    return SweepRungs(optuna.trial.Trial(study, trial_id), sweep)


def prune_reason(stoppers: list[Callback]) -> str | None:
    """Why a stopper ended training, if one did."""
    for stopper in stoppers:
        reason = getattr(stopper, "reason", None)
        if reason:
            return str(reason)
    return None
