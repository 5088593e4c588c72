"""Rows to JSON. Non-finite floats are spelled "NaN" / "Infinity" / "-Infinity" (valid JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for

from shared.jsonvalues import json_float
from shared.models import (
    Checkpoint,
    Job,
    JobEvent,
    LayerTrace,
    RankTrace,
    Sweep,
    SweepTrial,
    TrialState,
)

TRACE_STATS = (
    "numel", "norm", "mean", "std", "min", "max", "zero_frac", "nonfinite", "update_ratio",
)  # fmt: skip


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_json(job: Job, *, with_spec: bool = True) -> dict[str, Any]:
    """The job as the API shows it."""
    job_id = str(job.id)
    total = job.progress_total
    body: dict[str, Any] = {
        "id": job_id,
        "kind": job.kind,
        "status": job.status,
        "owner": job.owner,
        "queue": job.queue,
        "priority": job.priority,
        "attempt": job.attempt,
        "worker": job.worker,
        "progress": {
            "step": job.progress_step,
            "total_steps": total,
            "epoch": job.progress_epoch,
            "fraction": (job.progress_step / total) if total else 0.0,
        },
        "summary": job.summary,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "preempt_requested": job.preempt_requested,
        "sweep_id": str(job.sweep_id) if job.sweep_id is not None else None,
        "created_at": _ts(job.created_at),
        "started_at": _ts(job.started_at),
        "finished_at": _ts(job.finished_at),
        "heartbeat_at": _ts(job.heartbeat_at),
        "links": {
            "self": url_for("api_v1.jobs.get_job", job_id=job_id),
            "metrics": url_for("api_v1.results.metrics", job_id=job_id),
            "traces": url_for("api_v1.results.traces", job_id=job_id),
            "checkpoints": url_for("api_v1.checkpoints.list_checkpoints", job_id=job_id),
            "events": url_for("api_v1.jobs.events", job_id=job_id),
            "logs": url_for("api_v1.logs.logs", job_id=job_id),
            "stream": url_for("api_v1.stream.stream", job_id=job_id),
        },
    }
    if with_spec:
        body["spec"] = job.spec
    return body


def trace_json(row: LayerTrace | RankTrace, only: str | None = None) -> dict[str, Any]:
    """One trace row (or only one of its statistics); statistics not recorded are null.
    A rank's own row (hooks.per_rank) says its `rank`; it has no update ratio nor
    histogram."""
    body: dict[str, Any] = {"step": row.step, "layer": row.layer, "kind": row.kind}
    if isinstance(row, RankTrace):
        body["rank"] = row.rank
    for stat in (only,) if only else TRACE_STATS:
        value = getattr(row, stat, None)
        body[stat] = value if value is None or isinstance(value, int) else json_float(value)
    histogram = getattr(row, "histogram", None)
    if histogram is not None and not only:
        body["histogram"] = histogram
    return body


def checkpoint_json(ckpt: Checkpoint) -> dict[str, Any]:
    """Checkpoint metadata with its download link."""
    return {
        "id": str(ckpt.id),
        "step": ckpt.step,
        "epoch": ckpt.epoch,
        "tag": ckpt.tag,
        "sha256": ckpt.sha256,
        "size": ckpt.size,
        "created_at": _ts(ckpt.created_at),
        "links": {
            "state_dict": url_for(
                "api_v1.checkpoints.state_dict", job_id=str(ckpt.job_id), ref=str(ckpt.id)
            )
        },
    }


def event_json(event: JobEvent) -> dict[str, Any]:
    """One lifecycle event."""
    return {"at": _ts(event.at), "kind": event.kind, "message": event.message, "data": event.data}


def trial_json(trial: SweepTrial) -> dict[str, Any]:
    """One trial of a sweep."""
    return {
        "number": trial.number,
        "job_id": str(trial.job_id) if trial.job_id is not None else None,
        "params": trial.params,
        "state": trial.state,
        "value": json_float(trial.value) if trial.value is not None else None,
        "stop_reason": trial.stop_reason,
        "created_at": _ts(trial.created_at),
        "finished_at": _ts(trial.finished_at),
    }


def sweep_json(
    sweep: Sweep, trials: list[SweepTrial], *, with_trials: bool = False
) -> dict[str, Any]:
    """The sweep as the API shows it; its trials and spec where one sweep is asked for."""
    spec = sweep.spec
    sweep_id = str(sweep.id)
    counts = {str(state): 0 for state in TrialState}
    for trial in trials:
        counts[trial.state] += 1
    best = next((t for t in trials if t.number == sweep.best_trial), None)
    body: dict[str, Any] = {
        "id": sweep_id,
        "name": sweep.name,
        "owner": sweep.owner,
        "status": sweep.status,
        "method": spec["method"],
        "metric": spec["metric"],
        "goal": spec["goal"],
        "max_trials": spec["max_trials"],
        "parallel": spec["parallel"],
        "priority": sweep.priority,
        "cancel_requested": sweep.cancel_requested,
        "trials_by_state": counts,
        "best": trial_json(best) if best is not None else None,
        "error": sweep.error,
        "created_at": _ts(sweep.created_at),
        "finished_at": _ts(sweep.finished_at),
        "links": {
            "self": url_for("api_v1.sweeps.get_sweep", sweep_id=sweep_id),
            "parallel_plot": url_for("api_v1.sweeps.plot", sweep_id=sweep_id, name="parallel"),
            "history_plot": url_for("api_v1.sweeps.plot", sweep_id=sweep_id, name="history"),
        },
    }
    if with_trials:
        body["trials"] = [trial_json(t) for t in trials]
        body["spec"] = spec
    return body
