"""The API's contract from the client's side: one method per operation, requests built
from (and checked by) the models of `shared.contract` and answers read into them: the
same models the API validates with and /api/v1/openapi.json is generated from. The
transport (token, retries with backoff, error lines) is ApiClient's."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import click
import requests
from pydantic import BaseModel, ValidationError

from cli.client import ApiClient
from shared.contract.queries import JobListQuery, MetricsQuery, SweepListQuery, TracesQuery
from shared.contract.requests import (
    InferJobRequest,
    PredictRequest,
    SummaryRequest,
    SweepRequest,
    TrainJobRequest,
)
from shared.contract.responses import (
    Checkpoints,
    Events,
    Job,
    JobPage,
    JobSummary,
    Metrics,
    ModelSummary,
    Prediction,
    Sweep,
    SweepPage,
    Traces,
)

M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], data: Any, what: str = "request") -> M:
    """`data` as `model`, or a ClickException naming the field, before anything is sent."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise click.ClickException(f"invalid {what}: {_first_error(exc, what)}") from None


def _first_error(exc: ValidationError, whole: str) -> str:
    """`loc: msg` of the first error; `whole` names the value when the error is of all of it."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in err["loc"]) or whole
    return f"{loc}: {err['msg']}"


def _body(request: BaseModel) -> dict[str, Any]:
    # What the caller set, no more: the API fills in its own defaults.
    return request.model_dump(mode="json", exclude_unset=True)


def _answer(model: type[M], resp: requests.Response) -> M:
    """The answer as `model`; one that does not fit (a server of another version) is a
    line naming what did not, not a traceback."""
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as exc:
        raise click.ClickException(
            f"the API at {resp.url} answered outside the contract this client knows "
            f"({model.__name__}: {_first_error(exc, 'answer')}); "
            "is it another Trainyard version?"
        ) from None


def _params(query: BaseModel | None) -> dict[str, Any]:
    return query.model_dump(mode="json", exclude_none=True) if query is not None else {}


class Trainyard:
    """Typed calls of /api/v1."""

    def __init__(self, http: ApiClient) -> None:
        self.http = http

    def _get(self, model: type[M], path: str, query: BaseModel | None = None) -> M:
        resp = self.http.request("GET", f"/api/v1{path}", params=_params(query))
        return _answer(model, resp)

    def _post(self, model: type[M], path: str, body: BaseModel | None = None) -> M:
        resp = self.http.request("POST", f"/api/v1{path}", json=_body(body) if body else {})
        return _answer(model, resp)

    def submit(self, request: TrainJobRequest | InferJobRequest) -> Job:
        return self._post(Job, "/jobs", request)

    def jobs(self, query: JobListQuery | None = None) -> JobPage:
        return self._get(JobPage, "/jobs", query)

    def job(self, job_id: str | uuid.UUID) -> Job:
        return self._get(Job, f"/jobs/{job_id}")

    def cancel(self, job_id: str | uuid.UUID) -> Job:
        return self._post(Job, f"/jobs/{job_id}/cancel")

    def preempt(self, job_id: str | uuid.UUID) -> Job:
        return self._post(Job, f"/jobs/{job_id}/preempt")

    def delete(self, job_id: str | uuid.UUID) -> None:
        self.http.request("DELETE", f"/api/v1/jobs/{job_id}")

    def events(self, job_id: str | uuid.UUID) -> Events:
        return self._get(Events, f"/jobs/{job_id}/events")

    def summary(self, job_id: str | uuid.UUID) -> JobSummary:
        return self._get(JobSummary, f"/jobs/{job_id}/summary")

    def metrics(self, job_id: str | uuid.UUID, query: MetricsQuery | None = None) -> Metrics:
        return self._get(Metrics, f"/jobs/{job_id}/metrics", query)

    def traces(self, job_id: str | uuid.UUID, query: TracesQuery | None = None) -> Traces:
        return self._get(Traces, f"/jobs/{job_id}/traces", query)

    def checkpoints(self, job_id: str | uuid.UUID) -> Checkpoints:
        return self._get(Checkpoints, f"/jobs/{job_id}/checkpoints")

    def model_summary(self, request: SummaryRequest) -> ModelSummary:
        return self._post(ModelSummary, "/models/summary", request)

    def predict(self, job_id: str | uuid.UUID, request: PredictRequest) -> Prediction | Job:
        """The predictions (200), or the inference job to poll (202: not done in time)."""
        resp = self.http.request("POST", f"/api/v1/models/{job_id}/predict", json=_body(request))
        if resp.status_code == 202:
            return _answer(Job, resp)
        return _answer(Prediction, resp)

    def create_sweep(self, request: SweepRequest) -> Sweep:
        return self._post(Sweep, "/sweeps", request)

    def sweeps(self, query: SweepListQuery | None = None) -> SweepPage:
        return self._get(SweepPage, "/sweeps", query)

    def sweep(self, sweep_id: str | uuid.UUID) -> Sweep:
        return self._get(Sweep, f"/sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str | uuid.UUID) -> Sweep:
        return self._post(Sweep, f"/sweeps/{sweep_id}/cancel")
