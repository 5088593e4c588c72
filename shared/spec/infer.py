"""An inference request: which trained model, which of its checkpoints, which inputs."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, field_validator

from shared.spec.base import Strict

CHECKPOINT_TAGS = ("final", "best", "latest", "epoch")


class InferSpec(Strict):
    """`{"model_job_id": ..., "checkpoint": "final", "inputs": [...]}`.

    `inputs` is one sample or a batch as a JSON nested list (the dataset's sample shape,
    values as the dataset holds them: images in [0, 1]), or for image models one base64
    PNG / JPEG string or a list of them. `checkpoint_id` is filled in by the API: the
    checkpoint the reference ("final", "best", ...) pointed at when the job was submitted.
    """

    model_job_id: uuid.UUID
    checkpoint: str = Field(default="final", max_length=64)
    checkpoint_id: uuid.UUID | None = None
    inputs: Any

    @field_validator("checkpoint")
    @classmethod
    def _tag_or_id(cls, value: str) -> str:
        if value in CHECKPOINT_TAGS:
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(
                f"must be one of {list(CHECKPOINT_TAGS)} or a checkpoint id, got {value!r}"
            ) from None
