"""A succeeded training job with a 'final' checkpoint, stored directly (no training run):
the model that inference tests predict with."""

from __future__ import annotations

import uuid
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.net.build import build_model
from shared.spec import JobSpec
from shared.tensors import sha256_hex, state_dict_to_bytes

# A linear classifier of the 8x8 digits: small, and its outputs are easy to check.
DIGITS_LINEAR = {
    "model": {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "name": "fc", "in_features": 64, "out_features": 10},
        ]
    },
    "data": {"dataset": "digits"},
    "train": {"epochs": 1},
}


def trained_job(
    sessions: sessionmaker[Session], owner: str = "alice", spec: dict[str, Any] | None = None
) -> uuid.UUID:
    """A succeeded training job whose 'final' checkpoint holds the weights as built after
    torch.manual_seed(0)."""
    checked = JobSpec.model_validate(spec or DIGITS_LINEAR)
    torch.manual_seed(0)
    blob = state_dict_to_bytes(build_model(checked.model).state_dict())
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner=owner, kind="train",
            spec=checked.model_dump(mode="json"), queue="train",
        )  # fmt: skip
        job.status = "succeeded"
        repository.save_checkpoint(
            session=session, job_id=job.id, step=1, epoch=1, tag="final",
            model_state=blob, optimizer_state=None, sha256=sha256_hex(blob),
        )  # fmt: skip
        return job.id


def built_model(spec: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model trained_job stored, in eval mode."""
    torch.manual_seed(0)
    return build_model(JobSpec.model_validate(spec or DIGITS_LINEAR).model).eval()
