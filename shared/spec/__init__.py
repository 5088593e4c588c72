"""The job spec: what a user may ask for, checked by pydantic before anything is built.

Shapes and parameter counts are checked separately by a dry run on the meta device
(`shared.net.dryrun`); this package only checks types, ranges and size limits.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.spec.base import Strict
from shared.spec.data import DataSpec, TransformSpec, class_count, sample_shape
from shared.spec.hooks import AlertSpec, HookSpec
from shared.spec.infer import CHECKPOINT_TAGS, InferSpec
from shared.spec.model import MAX_DEPTH, MAX_LAYERS, InitFrom, InitRule, LayerSpec, ModelSpec
from shared.spec.train import (
    REGRESSION_LOSSES,
    DistributedSpec,
    EarlyStoppingSpec,
    GradClipSpec,
    OptimizerSpec,
    SchedulerSpec,
    TrainSpec,
)

__all__ = [
    "CHECKPOINT_TAGS",
    "MAX_DEPTH",
    "MAX_LAYERS",
    "AlertSpec",
    "DataSpec",
    "DistributedSpec",
    "EarlyStoppingSpec",
    "GradClipSpec",
    "HookSpec",
    "InferSpec",
    "InitFrom",
    "InitRule",
    "JobSpec",
    "LayerSpec",
    "ModelSpec",
    "OptimizerSpec",
    "SchedulerSpec",
    "TrainSpec",
    "TransformSpec",
    "class_count",
    "output_width",
    "sample_shape",
]


class JobSpec(Strict):
    """A training job: model + data + training + hooks."""

    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    hooks: HookSpec = Field(default_factory=HookSpec)

    @model_validator(mode="after")
    def _loss_fits_task(self) -> JobSpec:
        # Classification takes every loss: CrossEntropy / NLL get class indices, the
        # others regress onto one-hot rows. Regression has no classes to index.
        if self.data.task == "regression" and self.train.loss not in REGRESSION_LOSSES:
            raise ValueError(f"a regression dataset needs one of {list(REGRESSION_LOSSES)}")
        return self

    @model_validator(mode="after")
    def _monitored_metric_exists(self) -> JobSpec:
        for field in ("early_stopping", "scheduler"):
            monitor = getattr(getattr(self.train, field), "monitor", None)
            if monitor is None:
                continue
            if monitor.startswith("val_") and self.data.val_fraction == 0.0:
                raise ValueError(f"train.{field} monitors {monitor} but data.val_fraction is 0")
            if monitor == "val_accuracy" and self.data.task != "classification":
                raise ValueError(f"train.{field} monitors val_accuracy on a regression task")
        return self

    @model_validator(mode="after")
    def _stop_alone(self) -> JobSpec:
        # The ranks of a distributed job agree on stopping inside a step; an alert is
        # rank 0's alone, so it could not stop them together.
        alerts = self.hooks.alerts
        if alerts is not None and alerts.stop and self.train.world_size > 1:
            raise ValueError("hooks.alerts.stop is for single-process jobs (world_size 1)")
        return self


def output_width(spec: JobSpec) -> int:
    """How many values the model must output per sample for the job's loss and targets."""
    classes = class_count(spec.data)
    return classes if classes is not None else spec.data.output_dim
