"""Query-string parameters of the API's GET routes.

An empty parameter (`?limit=`) counts as absent, as it always has; an unknown one is a
400 naming it, so a typo (`?limt=5`) is not silently ignored.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from shared.models import JobStatus
from shared.spec.hooks import HookKind

INT32_MAX = 2**31 - 1
MAX_COMPARE = 10
TraceStat = Literal[
    "numel", "norm", "mean", "std", "min", "max", "zero_frac", "nonfinite", "update_ratio"
]
Step = Annotated[int, Field(ge=0, le=INT32_MAX)]
MaxPoints = Annotated[
    int, Field(ge=1, le=100_000, description="Thin each series to about this many points")
]
Limit = Annotated[int, Field(ge=1, le=INT32_MAX, description="At most this many rows")]
Text = Annotated[str, Field(max_length=255)]  # as long as the columns they match


class Query(BaseModel):
    """Parameters: empty means absent, unknown ones are refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "" and v is not None}
        return data


class NoQuery(Query):
    """A route without parameters: any parameter is a typo, refused."""


class JobListQuery(Query):
    status: JobStatus | SkipJsonSchema[None] = None
    kind: Literal["train", "infer"] | SkipJsonSchema[None] = None
    limit: int | SkipJsonSchema[None] = Field(
        default=None, ge=1, le=INT32_MAX, description="Page size (TRAINYARD_PAGE_LIMIT at most)"
    )
    cursor: Text | SkipJsonSchema[None] = Field(
        default=None, description="`next_cursor` of the previous page"
    )


class StreamQuery(Query):
    max_seconds: float | SkipJsonSchema[None] = Field(
        default=None,
        gt=0,
        le=3600,
        description="Close the stream after this long (TRAINYARD_STREAM_MAX_SECONDS at most); "
        "the client reconnects with Last-Event-ID",
    )
    trace_every: int | SkipJsonSchema[None] = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Send every n-th logged step's gradient norms (and the latest)",
    )
    last_event_id: Text | SkipJsonSchema[None] = Field(
        default=None, description="A cursor to go on from, as the Last-Event-ID header gives"
    )


class LogQuery(Query):
    after: int | SkipJsonSchema[None] = Field(
        default=None, ge=0, le=2**63 - 1, description="Lines after this line id (next_after)"
    )
    limit: int | SkipJsonSchema[None] = Field(
        default=None, ge=1, le=1000, description="At most this many lines (500)"
    )


class SweepListQuery(Query):
    limit: int | SkipJsonSchema[None] = Field(
        default=None, ge=1, le=INT32_MAX, description="How many (TRAINYARD_PAGE_LIMIT at most)"
    )


class MetricsQuery(Query):
    name: Text | SkipJsonSchema[None] = None
    split: Text | SkipJsonSchema[None] = None
    from_step: Step | SkipJsonSchema[None] = None
    to_step: Step | SkipJsonSchema[None] = None
    limit: Limit | SkipJsonSchema[None] = None
    max_points: MaxPoints | SkipJsonSchema[None] = None


class TracesQuery(Query):
    layer: Text | SkipJsonSchema[None] = Field(default=None, description="A layer name or glob")
    kind: HookKind | SkipJsonSchema[None] = None
    from_step: Step | SkipJsonSchema[None] = None
    to_step: Step | SkipJsonSchema[None] = None
    at_step: int | SkipJsonSchema[None] = Field(
        default=None, ge=0, le=INT32_MAX, description="One step only"
    )
    stat: TraceStat | SkipJsonSchema[None] = Field(
        default=None, description="Keep one statistic per row"
    )
    rank: int | SkipJsonSchema[None] = Field(
        default=None, ge=0, le=100_000, description="One rank's own rows (hooks.per_rank)"
    )
    limit: Limit | SkipJsonSchema[None] = None
    max_points: MaxPoints | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _one_step_or_a_range(self) -> TracesQuery:
        if self.at_step is not None and (self.from_step is not None or self.to_step is not None):
            raise ValueError("give at_step or a from_step / to_step range, not both")
        return self


class CompareQuery(Query):
    ids: str = Field(
        max_length=MAX_COMPARE * 40,
        description=f"2 to {MAX_COMPARE} job ids, comma-separated",
    )

    @field_validator("ids")
    @classmethod
    def _job_ids(cls, value: str) -> str:
        parts = _listed(value)
        if not 2 <= len(parts) <= MAX_COMPARE:
            raise ValueError(f"must list 2 to {MAX_COMPARE} job ids, comma-separated")
        for part in parts:
            try:
                uuid.UUID(part)
            except ValueError:
                raise ValueError(f"{part[:40]!r} is not a job id") from None
        return value

    def job_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(part) for part in _listed(self.ids)]


def _listed(value: str) -> list[str]:
    """The comma-separated items of `value`, blanks left out (`a,b,` is two)."""
    return [part.strip() for part in value.split(",") if part.strip()]


class TokenListQuery(Query):
    owner: Text | SkipJsonSchema[None] = None
