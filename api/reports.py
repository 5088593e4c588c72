"""What /summary and /compare say about jobs: metrics at a glance, the model, spec diffs."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared import repository
from shared.errors import TrainyardError
from shared.jsonvalues import json_safe_object
from shared.models import Job
from shared.net.dryrun import checked_model
from shared.net.summary import model_summary
from shared.spec_check import load_stored_spec


def metrics_at_a_glance(session: Session, job: Job) -> dict[str, Any]:
    """{"final": {"val_accuracy": 0.96, ...}, "best": {...}, "series": [...]}.

    Keys are `<split>_<name>` as in the job summary; `series` keeps step / epoch / count.
    """
    series = repository.metric_overview(session=session, job_id=job.id)
    final = {f"{s['split']}_{s['name']}": s["last"]["value"] for s in series}
    best = {f"{s['split']}_{s['name']}": s["best"] for s in series if s["best"] is not None}
    return json_safe_object({"final": final, "best": best, "series": series})


def model_description(job: Job, max_params: int) -> dict[str, Any] | None:
    """print(model), the named_parameters table and the counts, from a dry run of the spec
    that built the job's model; None when it no longer builds here (a spec of an older
    version, a layer plugin removed, a lower parameter limit): the job's results are
    still worth showing."""
    try:
        spec = load_stored_spec(job.spec, job_id=job.id)
        summary = model_summary(spec, *checked_model(spec, max_params)).to_json()
    except TrainyardError:
        return None
    keys = ("module_tree", "parameters", "param_count", "trainable_count", "frozen_count")
    return {key: summary[key] for key in keys}


def timing(job: Job) -> dict[str, Any]:
    """Wall time and speed: the worker's own numbers, else the row's timestamps."""
    summary = job.summary or {}
    wall = summary.get("wall_s")
    if wall is None and job.started_at is not None and job.finished_at is not None:
        wall = round((job.finished_at - job.started_at).total_seconds(), 3)
    return {
        "wall_s": wall,
        "steps": summary.get("steps", job.progress_step),
        "steps_per_s": summary.get("steps_per_s"),
        "device": summary.get("device"),
    }


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.optimizer.lr": 0.01, "model.layers[1].out_features": 32, ...}."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def spec_differences(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spec paths whose values are not the same in every job (absent is null)."""
    flat = [flatten(spec) for spec in specs]
    paths = sorted({path for f in flat for path in f})
    diffs = []
    for path in paths:
        values = [f.get(path) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diffs.append({"path": path, "values": values})
    return diffs
