"""Models without jobs: what a spec builds, checked and described, nothing stored."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import current_owner
from api.context import db, services
from api.validation import validate_train_spec
from shared.errors import SpecError
from shared.netspec import model_summary

bp = Blueprint("models", __name__)


@bp.post("/models/summary")
def summary() -> Response:
    """The dry run's findings: print(model), per-layer shapes, the named_parameters table."""
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or "spec" not in body:
        raise SpecError('the body must be {"spec": {...}}', details=[{"loc": "spec"}])
    settings = services().settings
    spec, _report = validate_train_spec(
        body["spec"], settings=settings, session=db(), owner=current_owner()
    )
    result = model_summary(spec, max_params=settings.max_params)
    return jsonify(result.to_json())
