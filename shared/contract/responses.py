"""What the API answers. Non-finite floats are the strings "NaN", "Infinity", "-Infinity"
(JSON has no such numbers); timestamps are ISO 8601 with their zone.

Answers may gain fields in later versions: these models ignore what they do not know,
so an older CLI keeps reading a newer API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.models import JobStatus, SweepStatus, TrialState
from shared.spec.hooks import HookKind

JsonFloat = float | Literal["NaN", "Infinity", "-Infinity"]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Progress(Answer):
    step: int
    total_steps: int | None
    epoch: int | None
    fraction: float


class JobLinks(Answer):
    self: str
    metrics: str
    traces: str
    checkpoints: str
    events: str
    logs: str | None = None
    stream: str | None = None


class Job(Answer):
    """A job as the API shows it; `spec` only where one job is asked for."""

    id: str
    kind: Literal["train", "infer"]
    status: JobStatus
    owner: str
    queue: str
    priority: int
    attempt: int
    worker: str | None
    progress: Progress
    summary: dict[str, Any] | None = Field(description="The worker's findings once it ends")
    error: str | None
    cancel_requested: bool
    preempt_requested: bool
    sweep_id: str | None = Field(default=None, description="The sweep this job is a trial of")
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    links: JobLinks
    spec: dict[str, Any] | None = None


class JobPage(Answer):
    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class Event(Answer):
    at: datetime | None
    kind: str
    message: str
    data: Any = None


class Events(Answer):
    events: list[Event]


class LogLine(Answer):
    id: int
    at: datetime
    attempt: int
    level: str
    source: str
    line: str


class LogPage(Answer):
    logs: list[LogLine]
    next_after: int | None = Field(description="Pass as `after` for the next lines")


class Point(Answer):
    step: int
    epoch: int | None
    value: JsonFloat


class Series(Answer):
    name: str
    split: str
    points: list[Point]


class Metrics(Answer):
    job_id: str
    series: list[Series]
    truncated: bool = Field(description="More rows matched than `limit`")


class Trace(Answer):
    """One layer's statistics at one step; those not recorded are null (or left out
    when `stat` asked for one)."""

    step: int
    layer: str
    kind: HookKind
    rank: int | None = None
    numel: int | None = None
    norm: JsonFloat | None = None
    mean: JsonFloat | None = None
    std: JsonFloat | None = None
    min: JsonFloat | None = None
    max: JsonFloat | None = None
    zero_frac: JsonFloat | None = None
    nonfinite: int | None = None
    update_ratio: JsonFloat | None = None
    histogram: list[JsonFloat] | None = Field(
        default=None, description="Counts in equal bins over [min, max] (hooks.histogram_bins)"
    )


class Traces(Answer):
    job_id: str
    traces: list[Trace]
    truncated: bool


class CheckpointLinks(Answer):
    state_dict: str


class Checkpoint(Answer):
    id: str
    step: int
    epoch: int | None
    tag: str
    sha256: str
    size: int
    created_at: datetime | None
    links: CheckpointLinks


class Checkpoints(Answer):
    job_id: str
    checkpoints: list[Checkpoint]


class LayerRow(Answer):
    name: str
    type: str
    output_shape: list[int | str] | None
    param_count: int


class ParamRow(Answer):
    name: str
    shape: list[int]
    numel: int
    trainable: bool


class ModelDescription(Answer):
    module_tree: str = Field(description="print(model)")
    parameters: list[ParamRow] = Field(description="named_parameters()")
    param_count: int
    trainable_count: int
    frozen_count: int


class ModelSummary(ModelDescription):
    """The dry run of a spec: the model, its layers' output shapes, its footprint."""

    layers: list[LayerRow]
    estimated_train_bytes: int
    output_shape: list[int | str] | None


class Timing(Answer):
    wall_s: float | None
    steps: int | None
    steps_per_s: float | None
    device: str | None


class Glance(Answer):
    final: dict[str, JsonFloat | None]
    best: dict[str, Any]
    series: list[dict[str, Any]]


class JobSummary(Timing):
    job: Job
    metrics: Glance
    model: ModelDescription | None


class ComparedJob(Timing):
    id: str
    kind: Literal["train", "infer"]
    status: JobStatus
    final: dict[str, JsonFloat | None]
    best: dict[str, JsonFloat | None]


class SpecDifference(Answer):
    path: str = Field(description="A spec path: train.optimizer.lr, model.layers[1].out_features")
    values: list[Any] = Field(
        description="Its value in each job, in the order asked (absent: null)"
    )


class Comparison(Answer):
    jobs: list[ComparedJob]
    spec_differences: list[SpecDifference]


class Prediction(Answer):
    """A finished inference job's answer: its id and what its worker found."""

    model_config = ConfigDict(extra="allow")

    job_id: str


class Token(Answer):
    id: int
    name: str | None
    owner: str
    prefix: str
    scopes: list[str]
    admin: bool
    state: Literal["live", "expired", "revoked"]
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class Tokens(Answer):
    tokens: list[Token]


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class SweepTrial(Answer):
    """One trial: Optuna's proposal and the job that ran it."""

    number: int
    job_id: str | None
    params: dict[str, Any]
    state: TrialState
    value: JsonFloat | None = Field(description="The sweep's metric, last recorded point")
    stop_reason: str | None = Field(description="Why it was pruned, failed or refused")
    created_at: datetime | None
    finished_at: datetime | None


class SweepLinks(Answer):
    self: str
    parallel_plot: str
    history_plot: str


class Sweep(Answer):
    """A sweep; `trials` and `spec` only where one sweep is asked for."""

    id: str
    name: str
    owner: str
    status: SweepStatus
    method: str
    metric: str
    goal: str
    max_trials: int
    parallel: int
    priority: int
    cancel_requested: bool
    trials_by_state: dict[str, int]
    best: SweepTrial | None
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None
    links: SweepLinks
    trials: list[SweepTrial] | None = None
    spec: dict[str, Any] | None = None


class SweepPage(Answer):
    sweeps: list[Sweep]


# The live stream's events (GET /jobs/<id>/stream): the JSON of each event's `data:` line,
# by the event's name. The CLI and the dashboard read them as these models say.
class StreamLifecycle(Answer):
    id: int
    at: datetime
    kind: str
    message: str
    data: Any = None


class StreamProgress(Answer):
    step: int
    total_steps: int | None
    epoch: int | None
    status: JobStatus


class StreamMetrics(Answer):
    step: int
    epoch: int | None
    values: dict[str, JsonFloat | None] = Field(description='e.g. {"train/loss": 0.41}')


class StreamTraces(Answer):
    step: int
    norms: dict[str, JsonFloat | None] = Field(
        description='Gradient norms by "<kind>:<layer>", kind param_grad or backward'
    )


class StreamLog(Answer):
    id: int
    at: datetime
    level: str
    source: str
    line: str


class StreamEnd(Answer):
    status: JobStatus | Literal["deleted"]


STREAM_EVENTS: dict[str, type[Answer]] = {
    "lifecycle": StreamLifecycle, "progress": StreamProgress, "metrics": StreamMetrics,
    "traces": StreamTraces, "logs": StreamLog, "end": StreamEnd,
}  # fmt: skip
