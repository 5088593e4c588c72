"""Fixtures of the API tests."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.fixture_types import Submit
from tests.support.specs import LENET


@pytest.fixture()
def submit(client: FlaskClient) -> Submit:
    """submit(headers, spec=None, **extra): POST a training job (LeNet on digits by
    default) and return the response."""

    def post(headers: dict[str, str], spec: dict[str, Any] | None = None, **extra: Any) -> Any:
        body = {"kind": "train", "spec": spec or LENET, **extra}
        return client.post("/api/v1/jobs", json=body, headers=headers)

    return post
