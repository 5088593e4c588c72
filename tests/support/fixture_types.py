"""Types of the factory fixtures, for the annotations of the tests that take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from shared.models import Job

NewJob = Callable[..., Job]  # conftest.new_job: a queued job row
TinyModel = Callable[..., nn.Sequential]  # worker/training/conftest.tiny_model
CountRows = Callable[[Any, Any], int]  # conftest.count_rows: rows of a table for one job
# worker/conftest.claimed_sink: (settings, job_id) -> (sink, writer, the clock's [now])
ClaimedSink = Callable[..., tuple[Any, Any, list[float]]]
Submit = Callable[..., Any]  # api/conftest.submit: POST /api/v1/jobs, the response
