"""The one error shape every refusal has: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    """Where the problem is (`loc`: a field path, a parameter or a header) and what it is."""

    model_config = ConfigDict(extra="allow")

    loc: str | None = None
    msg: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable, machine-readable: invalid_spec, not_found, ...")
    message: str = Field(description="One line for a person, naming the field or layer")
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorInfo
