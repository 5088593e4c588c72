"""The one place a job spec is checked, for the API at submit time and the worker before it
trains; and the one way a stored spec is read back.

`check_spec` runs every check that needs no database, cheapest first: the operator's
limits, the data, the dry run on the meta device, the memory estimate. It returns what
the checks found — the meta-device model, the dry run's sizes and shapes, the step plan —
so nothing is dry-run or counted twice. Errors locate fields relative to the spec
(`train.epochs`, `model.layers[2]`); the API prefixes them with `spec.`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from shared.config import Settings
from shared.dataset_files import check_data_available
from shared.errors import LimitExceeded, SpecError
from shared.net.dryrun import DEFAULT_MAX_PARAMS, DryRun, checked_model, estimate_train_bytes
from shared.spec import JobSpec
from shared.spec.data import train_size
from shared.steps import StepPlan


@dataclass(frozen=True, slots=True)
class SpecLimits:
    """The operator's limits (TRAINYARD_MAX_*), tighter than the spec's own hard caps;
    None leaves a limit to the spec."""

    max_params: int = DEFAULT_MAX_PARAMS
    max_epochs: int | None = None
    max_steps: int | None = None
    max_batch_size: int | None = None
    max_train_memory_mb: int | None = None
    max_world_size: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> SpecLimits:
        """The limits the settings configure."""
        return cls(
            max_params=settings.max_params,
            max_epochs=settings.max_epochs,
            max_steps=settings.max_steps,
            max_batch_size=settings.max_batch_size,
            max_train_memory_mb=settings.max_train_memory_mb,
            max_world_size=settings.max_world_size,
        )


@dataclass(frozen=True, slots=True)
class CheckedSpec:
    """A spec that passed every check, with what the checks found."""

    spec: JobSpec
    model: nn.Sequential  # on the meta device, init rules and freezing applied; no values
    dry_run: DryRun
    plan: StepPlan  # counted on the spec's nominal training-set size

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The model's state_dict keys (buffers included) and shapes."""
        return {key: tuple(value.shape) for key, value in self.model.state_dict().items()}


def check_spec(
    spec: JobSpec, *, limits: SpecLimits | None = None, data_dir: Path | None = None
) -> CheckedSpec:
    """Every check of `spec` that needs no database; SpecError (400) or LimitExceeded
    (413) naming the field or layer otherwise."""
    limits = limits or SpecLimits()
    plan = StepPlan.of(spec.train, train_size(spec.data))
    _check_run_length(spec, plan, limits)
    _check_world(spec, plan, limits)
    check_data_available(spec.data, data_dir)
    model, report = _DRY_RUNS.checked_model(spec, limits.max_params)
    _check_memory(spec, report, limits)
    return CheckedSpec(spec=spec, model=model, dry_run=report, plan=plan)


class DryRunCache:
    """The last `size` successful dry runs, by what they read: the model, the data and
    the loss (a sweep or a resubmission repeats them, and the dry run is most of what a
    submission costs). The cached meta model is shared: callers only read it.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, tuple[nn.Sequential, DryRun]] = OrderedDict()

    def checked_model(self, spec: JobSpec, max_params: int) -> tuple[nn.Sequential, DryRun]:
        """checked_model(spec, max_params), from the cache when it ran before."""
        key = json.dumps(
            [spec.model.model_dump(mode="json"), spec.data.model_dump(mode="json"),
             spec.train.loss, max_params],
            sort_keys=True,
        )  # fmt: skip
        with self._lock:
            hit = self._runs.get(key)
            if hit is not None:
                self._runs.move_to_end(key)
                return hit
        result = checked_model(spec, max_params)  # errors are not kept: they name the spec
        with self._lock:
            self._runs[key] = result
            while len(self._runs) > self._size:
                self._runs.popitem(last=False)
        return result


_DRY_RUNS = DryRunCache()


def _check_run_length(spec: JobSpec, plan: StepPlan, limits: SpecLimits) -> None:
    train = spec.train
    for field, value, limit in (
        ("epochs", train.epochs, limits.max_epochs),
        ("max_steps", train.max_steps, limits.max_steps),
        ("batch_size", train.batch_size, limits.max_batch_size),
    ):
        if value is not None and limit is not None and value > limit:
            raise SpecError(
                f"train.{field} is {value:,}; this service allows at most {limit:,}",
                details=[{"loc": f"train.{field}", "msg": f"at most {limit}"}],
            )
    # However it is asked for, the run's length is within the limit: epochs x steps.
    if limits.max_steps is not None and plan.total_steps > limits.max_steps:
        raise SpecError(
            f"train.epochs {train.epochs:,} at batch_size {train.batch_size:,} over "
            f"{plan.samples:,} samples means {plan.total_steps:,} steps; this service allows "
            f"at most {limits.max_steps:,}: lower epochs, raise batch_size or set max_steps",
            details=[{"loc": "train.epochs", "msg": "too many steps"}],
        )
    # max_steps alone runs as many epochs as it takes: each one evaluates and checkpoints.
    if limits.max_epochs is not None and plan.epochs > limits.max_epochs:
        raise SpecError(
            f"train.max_steps {plan.total_steps:,} means {plan.epochs:,} epochs of "
            f"{plan.batches_per_epoch:,} batches; this service allows at most "
            f"{limits.max_epochs:,} epochs: lower max_steps or raise batch_size",
            details=[{"loc": "train.max_steps", "msg": "too many epochs"}],
        )


def _check_world(spec: JobSpec, plan: StepPlan, limits: SpecLimits) -> None:
    """A distributed job fits the operator's limit and gives every process samples."""
    world = spec.train.world_size
    if limits.max_world_size is not None and world > limits.max_world_size:
        raise SpecError(
            f"train.distributed.world_size is {world}; this service allows at most "
            f"{limits.max_world_size} processes per job (TRAINYARD_MAX_WORLD_SIZE)",
            details=[{"loc": "train.distributed.world_size", "msg": "too many processes"}],
        )
    if world > plan.samples:
        raise SpecError(
            f"train.distributed.world_size {world} is more than the {plan.samples} training "
            "samples: every process needs at least one",
            details=[{"loc": "train.distributed.world_size", "msg": "more than the samples"}],
        )


def _check_memory(spec: JobSpec, report: DryRun, limits: SpecLimits) -> None:
    if limits.max_train_memory_mb is None:
        return
    need_mb = estimate_train_bytes(report, batch_size=spec.train.batch_size) / 2**20
    if need_mb > limits.max_train_memory_mb:
        raise LimitExceeded(
            f"training this model at batch_size {spec.train.batch_size} needs about "
            f"{need_mb:,.0f} MB; the limit is {limits.max_train_memory_mb:,} MB: "
            "lower train.batch_size or the model's size",
            details=[{"loc": "train.batch_size", "msg": "estimated memory over limit"}],
        )


def load_stored_spec(raw: Any, *, job_id: uuid.UUID, loc: str = "spec") -> JobSpec:
    """A stored job's spec as a JobSpec.

    One policy for every reader of a stored spec (the training worker, inference, plots,
    summaries): a spec that this version no longer accepts (stored by an older one) is a
    SpecError at `loc` that names the job; a view that can do without the model catches
    it and shows the rest.
    """
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        problem = f"job {job_id}'s spec no longer validates ({where}: {first['msg']}); retrain it"
        raise SpecError.at(loc, problem) from None
