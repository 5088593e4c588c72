"""Checkpoints: metadata, and the model state_dict as safetensors bytes (never pickle)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.auth import audit_here
from api.context import db
from api.contract import answers, contract
from api.ownership import owned_job
from api.serialize import checkpoint_json
from shared import repository
from shared.contract.queries import NoQuery
from shared.contract.responses import Checkpoints

bp = Blueprint("checkpoints", __name__)


@bp.get("/jobs/<job_id>/checkpoints")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_404", HTTP_200=Checkpoints),
    tags=["checkpoints"],
    operation_id="listCheckpoints",
)
def list_checkpoints(job_id: str) -> Response:
    """A job's checkpoints with step, epoch, tag, size and sha256."""
    session = db()
    job = owned_job(job_id)
    rows = repository.list_checkpoints(session=session, job_id=job.id)
    return jsonify({"job_id": str(job.id), "checkpoints": [checkpoint_json(c) for c in rows]})


@bp.get("/jobs/<job_id>/checkpoints/<ref>/state_dict")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_200", "HTTP_404"),  # safetensors bytes (api.routes.docs says so)
    tags=["checkpoints"],
    operation_id="downloadStateDict",
)
def state_dict(job_id: str, ref: str) -> Response:
    """Download weights; `ref` is a checkpoint id or final / epoch / latest."""
    session = db()
    job = owned_job(job_id)
    ckpt = repository.get_checkpoint(session=session, job_id=job.id, ref=ref)
    weights = ckpt.model_state  # read before the commit ends the transaction
    audit_here(session, "checkpoint_download", f"job {job.id} checkpoint {ckpt.id}")
    session.commit()
    resp = Response(weights, mimetype="application/octet-stream")
    resp.headers["Content-Disposition"] = (
        f'attachment; filename="{job.id}-step{ckpt.step}-{ckpt.tag}.safetensors"'
    )
    resp.headers["X-Checkpoint-Id"] = str(ckpt.id)
    resp.headers["X-Checkpoint-Sha256"] = ckpt.sha256
    resp.set_etag(ckpt.sha256)
    return resp
