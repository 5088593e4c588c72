"""Text no database can store (NUL, lone surrogates) is a 400 naming where it was, on
every route, and nothing is stored; layer names match their pattern in full."""

from __future__ import annotations

import json

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.models import Job
from tests.support.fixture_types import Submit
from tests.support.specs import TINY


def _jobs(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def _refused(resp: object, loc: str) -> None:
    status = getattr(resp, "status_code", None)
    body = resp.get_json()  # type: ignore[attr-defined]
    assert status == 400, body
    assert body["error"]["code"] == "invalid_text"
    assert body["error"]["details"][0]["loc"] == loc, body


def test_a_nul_in_a_query_parameter_is_a_400_naming_it(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    job_id = submit(alice, TINY).get_json()["id"]
    base = f"/api/v1/jobs/{job_id}"
    _refused(client.get(f"{base}/metrics?name=%00", headers=alice), "query.name")
    _refused(client.get(f"{base}/metrics?split=a%00b", headers=alice), "query.split")
    _refused(client.get(f"{base}/traces?layer=%00", headers=alice), "query.layer")
    _refused(client.get("/api/v1/jobs?status=%00", headers=alice), "query.status")


def test_nul_and_lone_surrogates_in_a_body_are_refused_and_nothing_is_stored(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    before = _jobs(sessions)
    nul_spec = json.dumps({"kind": "train", "spec": {**TINY, "model": {"preset": "my\x00"}}})
    resp = client.post("/api/v1/jobs", data=nul_spec, headers=alice)
    _refused(resp, "body.spec.model.preset")
    surrogate = '{"kind": "train", "spec": {"\\ud800": 1}}'
    _refused(client.post("/api/v1/jobs", data=surrogate, headers=alice), "body.spec key")
    summary = '{"spec": {"model": {"layers": [{"type": "Linear\\u0000"}]}}}'
    resp = client.post("/api/v1/models/summary", data=summary, headers=alice)
    _refused(resp, "body.spec.model.layers[0].type")
    assert _jobs(sessions) == before


def test_a_layer_name_ending_in_a_newline_is_refused(alice: dict[str, str], submit: Submit) -> None:
    layers = [{"type": "Linear", "name": "fc\n", "in_features": 10, "out_features": 1}]
    resp = submit(alice, {**TINY, "model": {"layers": layers}})
    assert resp.status_code == 400, resp.get_json()
    assert "identifier" in resp.get_json()["error"]["message"]


def test_a_nul_in_the_path_is_a_400_before_authentication(client: FlaskClient) -> None:
    _refused(client.get("/api/v1/jobs/%00"), "path")


def test_a_body_that_is_not_utf8_is_refused(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    """A raw surrogate (CESU bytes) or a UTF-16 body would slip past the escape scan."""
    before = _jobs(sessions)
    for raw in (b'{"kind": "train", "spec": {"a": "\xed\xa0\x80"}}',
                '{"kind": "train", "spec": {"a": "\\u0000"}}'.encode("utf-16")):  # fmt: skip
        resp = client.post("/api/v1/jobs", data=raw, headers=alice)
        assert resp.status_code == 400, resp.get_json()
        assert resp.get_json()["error"]["details"][0]["loc"] == "body"
    assert _jobs(sessions) == before
