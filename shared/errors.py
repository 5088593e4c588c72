"""Domain errors. The API maps each to an HTTP status; workers turn them into a failed job."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class TrainyardError(Exception):
    """Base class: `message` is safe to show to the user who sent the request."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class SpecError(TrainyardError):
    """The job spec cannot be built or trained; `details` name the failing field paths."""

    code = "invalid_spec"

    @classmethod
    def at(cls, loc: str, problem: str, *, label: str | None = None) -> SpecError:
        """The error for `problem` at the field path `loc`, which `details` carry.

        The message reads "<label>: <problem>"; `label` defaults to `loc` (a layer passes
        its readable name), and an empty label leaves the problem alone (a statement about
        the whole model).
        """
        shown = loc if label is None else label
        message = f"{shown}: {problem}" if shown else problem
        return cls(message, details=[{"loc": loc, "msg": problem}])


class BadParameter(TrainyardError):
    """A query-string parameter is malformed or out of range."""

    code = "invalid_parameter"


class LimitExceeded(TrainyardError):
    """A request is larger than the configured limits allow."""

    status = 413
    code = "too_large"


class NotFound(TrainyardError):
    """No such object for this owner (another owner's objects are 'not found' too)."""

    status = 404
    code = "not_found"


class JobNotFound(NotFound):
    """No job with that id belongs to the caller."""


class InferenceFailed(TrainyardError):
    """An accepted inference job ended without predictions; the message says why."""

    status = 422
    code = "inference_failed"


class NoData(NotFound):
    """A view of a job (a plot) has no rows to show; the message says how to get them."""

    code = "no_data"


class IdempotencyConflict(TrainyardError):
    """An Idempotency-Key the caller already used for a different request."""

    status = 422
    code = "idempotency_key_reused"


class InvalidTransition(TrainyardError):
    """A job status change that the state machine does not allow (e.g. succeeded -> running)."""

    status = 409
    code = "invalid_transition"


class LeaseLost(TrainyardError):
    """A worker's claim on a job ended (expired and taken over, or ended by the sweeper)."""

    status = 409
    code = "lease_lost"


class QuotaExceeded(TrainyardError):
    """An owner is over one of its quotas (the message names it); retry after a while."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, retry_after: int) -> None:
        super().__init__(message, details=[{"loc": "quota", "msg": quota}])
        self.retry_after = retry_after


class DiskFull(TrainyardError):
    """The disk the embedded database writes to is full: nothing new is stored."""

    status = 507
    code = "insufficient_storage"


class Forbidden(TrainyardError):
    """A live token without the scope (or admin right) the request needs."""

    status = 403
    code = "forbidden"


class Unauthorized(TrainyardError):
    """Missing, unknown or revoked bearer token."""

    status = 401
    code = "unauthorized"


def pydantic_details(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    """Pydantic errors as [{"loc": "spec.model.layers[0].type", "msg": ...}]."""
    details = []
    for err in exc.errors(include_url=False):
        loc = prefix
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else f".{part}"
        details.append({"loc": loc, "msg": err["msg"]})
    return details
