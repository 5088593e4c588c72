"""Sweeps: create, list, show (with the trials table), cancel, plots."""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, Response, jsonify, url_for

from api import sweep_charts
from api.auth import audit_here, current_owner
from api.context import db, services
from api.contract import answers, body_model, contract, query_model, within
from api.serialize import sweep_json
from shared import repository
from shared.contract.queries import NoQuery, SweepListQuery
from shared.contract.requests import SweepRequest
from shared.contract.responses import Sweep as SweepOut
from shared.contract.responses import SweepPage
from shared.errors import NotFound, SpecError
from shared.models import Sweep
from shared.queues import send_sweep_pass
from shared.spec.sweep import SweepSpec
from shared.sweeps.trial_specs import base_with_defaults, check_metric, check_paths, trial_spec
from shared.validation import validate_train_spec

log = logging.getLogger(__name__)
bp = Blueprint("sweeps", __name__)
TAGS = ["sweeps"]


@bp.post("/sweeps")
@contract.validate(
    query=NoQuery,
    json=SweepRequest,
    resp=answers("HTTP_404", "HTTP_422", HTTP_201=SweepOut),
    tags=TAGS,
    operation_id="createSweep",
)
def create() -> tuple[Response, int, dict[str, str]]:
    """Start a sweep. The base spec is checked as a submission is, every path of the space
    must name a field of it, and the base spec with the sweep's early-stop rules must pass
    too (a 400 names the field); each trial is checked again before it is queued."""
    asked = body_model(SweepRequest)
    session, settings, owner = db(), services().settings, current_owner()
    base = validate_train_spec(asked.spec, settings=settings, session=session, owner=owner).spec
    base_json = base_with_defaults(base)
    sweep_spec = SweepSpec.model_validate({**asked.model_dump(mode="json"), "spec": base_json})
    check_paths(sweep_spec, base_json)
    check_metric(sweep_spec, base)
    try:
        validate_train_spec(
            trial_spec(sweep_spec, base_json, {}), settings=settings, session=session, owner=owner
        )
    except SpecError as exc:
        raise SpecError(f"early_stop: {exc.message}", details=exc.details) from None
    sweep = repository.create_sweep(
        session=session, owner=owner, name=sweep_spec.name,
        spec=sweep_spec.model_dump(mode="json"), priority=sweep_spec.priority,
    )  # fmt: skip
    audit_here(session, "sweep_created", f"sweep {sweep.id}")
    session.commit()
    _wake(sweep)
    location = url_for("api_v1.sweeps.get_sweep", sweep_id=str(sweep.id))
    return jsonify(sweep_json(sweep, [], with_trials=True)), 201, {"Location": location}


def _wake(sweep: Sweep) -> None:
    """A controller pass now; one that cannot be sent is left to the sweeper."""
    try:
        send_sweep_pass(services().celery, sweep_id=str(sweep.id))
    except Exception:
        log.warning("sweep %s: no controller pass sent; the sweeper will send one", sweep.id)


def owned_sweep(raw_id: str) -> Sweep:
    """The caller's sweep: 404 alike for a malformed id, an unknown one and another's."""
    try:
        sweep_id = uuid.UUID(raw_id)
    except ValueError:
        raise repository.SweepNotFound(f"sweep {raw_id} not found") from None
    return repository.get_sweep(session=db(), sweep_id=sweep_id, owner=current_owner())


@bp.get("/sweeps")
@contract.validate(query=SweepListQuery, resp=answers(HTTP_200=SweepPage), tags=TAGS)
def list_sweeps() -> Response:
    """The caller's sweeps, newest first."""
    asked: SweepListQuery = query_model(SweepListQuery)
    max_limit = services().settings.page_limit
    limit = within("limit", asked.limit, min(50, max_limit), max_limit)
    session = db()
    sweeps = repository.list_sweeps(session=session, owner=current_owner(), limit=limit)
    trials = repository.trials_of_sweeps(session=session, sweep_ids=[s.id for s in sweeps])
    return jsonify({"sweeps": [sweep_json(s, trials.get(s.id, [])) for s in sweeps]})


@bp.get("/sweeps/<sweep_id>")
@contract.validate(
    query=NoQuery, resp=answers("HTTP_404", HTTP_200=SweepOut), tags=TAGS, operation_id="getSweep"
)
def get_sweep(sweep_id: str) -> Response:
    """One sweep: status, best trial, and every trial (params, metric, state, stop reason)."""
    sweep = owned_sweep(sweep_id)
    trials = repository.sweep_trials(session=db(), sweep_id=sweep.id)
    return jsonify(sweep_json(sweep, trials, with_trials=True))


@bp.post("/sweeps/<sweep_id>/cancel")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_404", "HTTP_409", HTTP_202=SweepOut),
    tags=TAGS,
    operation_id="cancelSweep",
)
def cancel(sweep_id: str) -> tuple[Response, int]:
    """Cancel the running trials and start no new one (409 once the sweep has ended)."""
    session = db()
    sweep = owned_sweep(sweep_id)
    repository.request_sweep_cancel(session=session, sweep_id=sweep.id)
    audit_here(session, "sweep_cancel", f"sweep {sweep.id}")
    session.commit()
    _wake(sweep)
    session.refresh(sweep)
    trials = repository.sweep_trials(session=session, sweep_id=sweep.id)
    return jsonify(sweep_json(sweep, trials, with_trials=True)), 202


@bp.get("/sweeps/<sweep_id>/plots/<name>.png")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_200", "HTTP_404"),  # PNG bytes
    tags=TAGS,
    operation_id="getSweepPlot",
)
def plot(sweep_id: str, name: str) -> Response:
    """`parallel` (parallel coordinates of the trials' parameters, coloured by the metric)
    or `history` (each trial's value and the best so far) as PNG."""
    if name not in sweep_charts.PLOTS:
        raise NotFound(
            f"no sweep plot named {name!r}; the plots are {', '.join(sweep_charts.PLOTS)}",
            details=[{"loc": "name", "msg": f"one of {list(sweep_charts.PLOTS)}"}],
        )
    sweep = owned_sweep(sweep_id)
    trials = repository.sweep_trials(session=db(), sweep_id=sweep.id)
    png = sweep_charts.render(name, SweepSpec.model_validate(sweep.spec), trials)
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-cache"})
