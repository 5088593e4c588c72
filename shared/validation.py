"""Everything checked before a job is stored: pydantic, then `check_spec`, then the database.

A spec that passes here builds and starts training on a worker; one that fails gets a
400 (or 413) naming the field or layer, and nothing is stored or queued.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from shared import repository
from shared.config import Settings
from shared.errors import NotFound, SpecError, TrainyardError, pydantic_details
from shared.net.weights import problems_message, safetensors_shapes, state_problems
from shared.spec import JobSpec
from shared.spec_check import CheckedSpec, SpecLimits, check_spec


def parse_spec(raw: Any) -> JobSpec:
    """Pydantic: types, ranges, hard limits; errors name `spec.<field path>`. A JobSpec
    that the route's contract already validated is taken as it is."""
    if isinstance(raw, JobSpec):
        return raw
    if not isinstance(raw, dict):
        raise SpecError("'spec' must be a JSON object", details=[{"loc": "spec", "msg": "missing"}])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        details = pydantic_details(exc, "spec")
        first = details[0]
        raise SpecError(f"invalid spec: {first['loc']}: {first['msg']}", details=details) from None


def check_init_from(checked: CheckedSpec, *, session: Session, owner: str) -> uuid.UUID | None:
    """The starting checkpoint is the caller's and fits the model (keys and shapes);
    returns its id (None without `init_from`), leaving the spec as it is."""
    start = checked.spec.model.init_from
    if start is None:
        return None
    loc = "spec.model.init_from"
    try:
        repository.get_job(session=session, job_id=start.job_id, owner=owner)
        ckpt = repository.get_checkpoint(session=session, job_id=start.job_id, ref=start.checkpoint)
    except NotFound as exc:
        raise SpecError(
            f"{loc}: {exc.message}", details=[{"loc": loc, "msg": "not found"}]
        ) from None
    problems = state_problems(
        checked.state_shapes(),
        safetensors_shapes(ckpt.model_state),
        strict=start.strict,
        skip=start.skip,
    )
    if problems:
        raise SpecError(
            f"{loc}: checkpoint {ckpt.id} does not fit the model: {problems_message(problems)}",
            details=[{"loc": loc, "msg": p} for p in problems[:20]],
        )
    return ckpt.id


def validate_train_spec(
    raw: Any, *, settings: Settings, session: Session, owner: str
) -> CheckedSpec:
    """All submit-time checks, cheapest first. A spec that starts from a checkpoint comes
    back with that checkpoint pinned by id: "latest" or "best" may move before training."""
    spec = parse_spec(raw)
    try:
        checked = check_spec(spec, limits=SpecLimits.of(settings), data_dir=settings.data_dir)
    except TrainyardError as exc:
        raise _prefixed(exc) from None
    pinned = check_init_from(checked, session=session, owner=owner)
    if pinned is None:
        return checked
    start = spec.model.init_from
    assert start is not None
    model = spec.model.model_copy(
        update={"init_from": start.model_copy(update={"checkpoint": str(pinned)})}
    )
    return dataclasses.replace(checked, spec=spec.model_copy(update={"model": model}))


def _prefixed(exc: TrainyardError) -> TrainyardError:
    # Same field paths as pydantic's: relative to the request body.
    for detail in exc.details:
        detail["loc"] = f"spec.{detail['loc']}"
    return exc
