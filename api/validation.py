"""Everything checked before a job is stored: pydantic, operator limits, data, dry run, weights.

A spec that passes here builds and starts training on a worker; one that fails gets a
400 (or 413) naming the field or layer, and nothing is stored or queued.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.errors import pydantic_details
from shared import repository
from shared.config import Settings
from shared.dataset_files import check_data_available
from shared.errors import LimitExceeded, NotFound, SpecError
from shared.net.dryrun import DryRun, dry_run, estimate_train_bytes, expected_state_shapes
from shared.net.weights import problems_message, safetensors_shapes, state_problems
from shared.spec import JobSpec
from shared.spec.data import train_size


def parse_spec(raw: Any) -> JobSpec:
    """Pydantic: types, ranges, hard limits; errors name `spec.<field path>`."""
    if not isinstance(raw, dict):
        raise SpecError("'spec' must be a JSON object", details=[{"loc": "spec", "msg": "missing"}])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        details = pydantic_details(exc, "spec")
        first = details[0]
        raise SpecError(f"invalid spec: {first['loc']}: {first['msg']}", details=details) from None


def _prefixed(exc: SpecError) -> SpecError:
    # Same field paths as pydantic's: relative to the request body.
    for detail in exc.details:
        detail["loc"] = f"spec.{detail['loc']}"
    return exc


def check_limits(spec: JobSpec, settings: Settings) -> None:
    """The operator's limits (settings), tighter than the spec's hard caps."""
    train = spec.train
    for field, value, limit in (
        ("epochs", train.epochs, settings.max_epochs),
        ("max_steps", train.max_steps, settings.max_steps),
        ("batch_size", train.batch_size, settings.max_batch_size),
    ):
        if value is not None and value > limit:
            raise SpecError(
                f"spec.train.{field} is {value:,}; this service allows at most {limit:,}",
                details=[{"loc": f"spec.train.{field}", "msg": f"at most {limit}"}],
            )
    # max_steps alone runs as many epochs as it takes: each one evaluates and checkpoints.
    if train.epochs is None and train.max_steps is not None:
        batches = math.ceil(train_size(spec.data) / train.batch_size)
        epochs = math.ceil(train.max_steps / math.ceil(batches / train.accumulate_steps))
        if epochs > settings.max_epochs:
            raise SpecError(
                f"spec.train.max_steps {train.max_steps:,} means {epochs:,} epochs of "
                f"{batches:,} batches; this service allows at most {settings.max_epochs:,} "
                "epochs: lower max_steps or raise batch_size",
                details=[{"loc": "spec.train.max_steps", "msg": "too many epochs"}],
            )


def check_memory(spec: JobSpec, report: DryRun, settings: Settings) -> None:
    """413 when the estimated training footprint is over the limit."""
    need_mb = estimate_train_bytes(report, batch_size=spec.train.batch_size) / 2**20
    if need_mb > settings.max_train_memory_mb:
        raise LimitExceeded(
            f"training this model at batch_size {spec.train.batch_size} needs about "
            f"{need_mb:,.0f} MB; the limit is {settings.max_train_memory_mb:,} MB: "
            "lower train.batch_size or the model's size",
            details=[{"loc": "spec.train.batch_size", "msg": "estimated memory over limit"}],
        )


def check_init_from(spec: JobSpec, *, session: Session, owner: str) -> None:
    """The starting checkpoint is the caller's and fits the model (keys and shapes)."""
    start = spec.model.init_from
    if start is None:
        return
    loc = "spec.model.init_from"
    try:
        repository.get_job(session=session, job_id=start.job_id, owner=owner)
        ckpt = repository.get_checkpoint(session=session, job_id=start.job_id, ref=start.checkpoint)
    except NotFound as exc:
        raise SpecError(
            f"{loc}: {exc.message}", details=[{"loc": loc, "msg": "not found"}]
        ) from None
    problems = state_problems(
        expected_state_shapes(spec),
        safetensors_shapes(ckpt.model_state),
        strict=start.strict,
        skip=start.skip,
    )
    if problems:
        raise SpecError(
            f"{loc}: checkpoint {ckpt.id} does not fit the model: {problems_message(problems)}",
            details=[{"loc": loc, "msg": p} for p in problems[:20]],
        )
    # Pin the checkpoint that was checked: "latest" or "best" may move before training.
    start.checkpoint = str(ckpt.id)


def validate_train_spec(
    raw: Any, *, settings: Settings, session: Session, owner: str
) -> tuple[JobSpec, DryRun]:
    """All submit-time checks, cheapest first."""
    spec = parse_spec(raw)
    check_limits(spec, settings)
    try:
        check_data_available(spec.data, settings.data_dir)
        report = dry_run(spec, max_params=settings.max_params)
    except SpecError as exc:
        raise _prefixed(exc) from None
    check_memory(spec, report, settings)
    check_init_from(spec, session=session, owner=owner)
    return spec, report
