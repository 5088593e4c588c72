"""HTTP as a client expects it: 405 says what is allowed, every answer carries the
security headers, a body over the limit is a 413 however it is sent."""

from __future__ import annotations

import io

from flask.testing import FlaskClient

from api.headers import SECURITY_HEADERS


def test_a_405_names_the_allowed_methods(client: FlaskClient, alice: dict[str, str]) -> None:
    resp = client.put("/api/v1/jobs", headers=alice)
    assert resp.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in resp.headers["Allow"].split(",")}
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


def test_every_answer_carries_the_security_headers(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    answers = [
        client.get("/api/v1/jobs", headers=alice),  # JSON
        client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers=alice),  # 404
        client.get("/api/v1/jobs"),  # 401
        client.get("/healthz"),
    ]
    for resp in answers:
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers.get(name) == value, (resp.status_code, name)


def test_a_chunked_body_over_the_limit_is_a_413(
    client: FlaskClient, alice: dict[str, str], settings: object
) -> None:
    limit = settings.max_request_bytes
    body = b'{"kind": "train", "spec": {"x": "' + b"a" * (limit + 10) + b'"}}'
    resp = client.post(
        "/api/v1/jobs",
        input_stream=io.BytesIO(body),
        headers={**alice, "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        # As gunicorn says of a chunked body it has de-chunked: read until the end.
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.status_code == 413, resp.get_json()
    assert resp.get_json()["error"]["code"] == "too_large"


def test_a_chunked_body_within_the_limit_is_read_whole(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    body = b'{"spec": {"model": {"preset": "lenet"}, "data": {"dataset": "digits", '
    body += b'"image_size": 32}}}'
    resp = client.post(
        "/api/v1/models/summary",
        input_stream=io.BytesIO(body),
        headers={**alice, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.status_code == 200, resp.get_json()
