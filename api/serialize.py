"""Rows to JSON. Non-finite floats are spelled "NaN" / "Infinity" / "-Infinity" (valid JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for

from shared.jsonvalues import json_float
from shared.models import Checkpoint, Job, JobEvent, LayerTrace, RankTrace

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
