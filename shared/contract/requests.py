"""Request bodies of the API's POST routes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StrictInt,
    Tag,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from shared.spec import JobSpec
from shared.spec.base import Strict
from shared.spec.infer import CHECKPOINT_TAGS
from shared.spec.sweep import SweepSpec

DEFAULT_PRIORITY = 5
MAX_WAIT_SECONDS = 600


def _priority(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ValueError(
            f"must be a whole number from 0 (runs last) to 9 (runs first), got {value!r}"
        )
    return value


def _seconds(value: Any) -> Any:
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not number or not 0 <= value <= MAX_WAIT_SECONDS:
        raise ValueError(
            f"must be a number of seconds between 0 and {MAX_WAIT_SECONDS}, got {value!r}"
        )
    return value


Priority = Annotated[
    StrictInt,
    BeforeValidator(_priority),
    Field(ge=0, le=9, description="0 runs last, 9 runs first (default 5)"),
]
Checkpoint = Annotated[
    str,
    Field(max_length=64, description=f"One of {list(CHECKPOINT_TAGS)} or a checkpoint id"),
]
Inputs = Annotated[
    Any,
    Field(
        description="One sample or a batch as nested lists, or for image models one base64 "
        "PNG / JPEG (a `data:` URL or plain base64) or a list of them"
    ),
]


# A job that trains in well under a second: the document's example, and what the
# contract tests submit to reach every route of a real job.
EXAMPLE_SPEC: dict[str, Any] = {
    "model": {"preset": "my_model"},
    "data": {
        "dataset": "synthetic", "task": "regression", "input_shape": [10], "output_dim": 1,
        "size": 64,
    },
    "train": {"epochs": 1, "batch_size": 32, "loss": "MSELoss", "seed": 0},
}  # fmt: skip


class TrainJobRequest(Strict):
    """A training job: the spec (model, data, train, hooks) and its priority."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"kind": "train", "spec": EXAMPLE_SPEC, "priority": 5}]}
    )

    kind: Literal["train"] = "train"
    spec: JobSpec
    priority: Priority = DEFAULT_PRIORITY


class InferJobRequest(Strict):
    """An inference job: predictions of a training job's checkpoint for `inputs`."""

    kind: Literal["infer"]
    model_job_id: uuid.UUID
    checkpoint: Checkpoint = "final"
    inputs: Inputs


def _job_kind(value: Any) -> str:
    # `kind` may be left out: a job is a training job unless it says otherwise.
    kind = value.get("kind", "train") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) else ""


class JobRequest(RootModel[Annotated[
    Annotated[TrainJobRequest, Tag("train")] | Annotated[InferJobRequest, Tag("infer")],
    Discriminator(_job_kind, custom_error_type="invalid_kind",
                  custom_error_message="kind must be 'train' or 'infer'"),
]]):  # fmt: skip
    """`POST /api/v1/jobs`: a training or an inference job, told apart by `kind`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"kind": "train", "spec": EXAMPLE_SPEC, "priority": 5}]}
    )


class SummaryRequest(Strict):
    """`POST /api/v1/models/summary`: what a training spec builds; nothing is stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"spec": EXAMPLE_SPEC}]})

    spec: JobSpec


class PredictRequest(Strict):
    """`POST /api/v1/models/<job_id>/predict`: predictions, waited for up to `wait_seconds`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": [[0.5] * 10], "checkpoint": "final"}]}
    )

    inputs: Inputs
    checkpoint: Checkpoint = "final"
    wait_seconds: float | SkipJsonSchema[None] = Field(
        default=None,
        description="How long to wait for the answer (TRAINYARD_PREDICT_WAIT_SECONDS at most)",
        json_schema_extra={"minimum": 0, "maximum": MAX_WAIT_SECONDS},
    )

    @field_validator("wait_seconds", mode="before")
    @classmethod
    def _given_means_a_number(cls, value: Any) -> Any:
        # Before the type: a bool, a string or an explicit null is refused, not coerced.
        return _seconds(value)


class SweepRequest(SweepSpec):
    """`POST /api/v1/sweeps`: a base training spec, a search space over spec paths, how to
    search and when to stop trials early."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "spec": EXAMPLE_SPEC,
                    "space": {"train.optimizer.lr": {"log_uniform": [1e-4, 1.0]}},
                    "method": "random",
                    "metric": "val/loss",
                    "goal": "minimize",
                    "max_trials": 2,
                    "parallel": 2,
                }
            ]
        }
    )

    # The base spec is SweepSpec's plain object here, checked by the route as POST /jobs
    # checks a spec (a 400 names `spec.<field>`): JobSpec nested in this body made the
    # document's schema deep enough to crash schemathesis's coverage phase on Python 3.11.
