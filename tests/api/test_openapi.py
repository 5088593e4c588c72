"""The OpenAPI document is generated from the models that validate, covers every route,
and is readable offline; requests that do not fit the models are 400s naming the field."""

from __future__ import annotations

import re
import uuid

from flask import Flask
from flask.testing import FlaskClient

from shared.spec import JobSpec
from shared.spec.train import TrainSpec

DOC_ENDPOINTS = ("docs.", "openapi_", "static", "ui.")  # pages and their files, not the API


def _doc(client: FlaskClient) -> dict:  # type: ignore[type-arg]
    resp = client.get("/api/v1/openapi.json")  # no token: the contract is public
    assert resp.status_code == 200
    doc: dict = resp.get_json()  # type: ignore[type-arg]
    return doc


def test_every_route_is_in_the_document_with_its_methods(app: Flask, client: FlaskClient) -> None:
    doc = _doc(client)
    assert doc["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(DOC_ENDPOINTS):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in doc["paths"], path
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        assert {m.lower() for m in methods} <= set(doc["paths"][path]), path


def test_bearer_auth_on_the_api_and_none_on_the_probes(client: FlaskClient) -> None:
    doc = _doc(client)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/api/v1/jobs"]["post"]  # inherits bearer
    errors = doc["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]
    for code in ("400", "401", "403", "404", "429", "503"):
        schema = errors[code]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorBody"), code


def test_the_schemas_are_the_validating_models(client: FlaskClient) -> None:
    schemas = _doc(client)["components"]["schemas"]
    assert set(schemas["TrainSpec"]["properties"]) == set(TrainSpec.model_fields)
    assert set(schemas["JobSpec"]["properties"]) == set(JobSpec.model_fields)
    assert schemas["JobSpec"]["additionalProperties"] is False  # a typo is refused
    body = _doc(client)["paths"]["/api/v1/jobs"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/JobRequest")
    traces = _doc(client)["paths"]["/api/v1/jobs/{job_id}/traces"]["get"]["parameters"]
    stat = next(p for p in traces if p["name"] == "stat")
    assert "norm" in stat["schema"]["enum"] and "default" not in stat["schema"]


def test_binary_answers_and_links_from_a_submitted_job(client: FlaskClient) -> None:
    paths = _doc(client)["paths"]
    state = paths["/api/v1/jobs/{job_id}/checkpoints/{ref}/state_dict"]["get"]["responses"]
    assert "application/octet-stream" in state["200"]["content"]
    plot = paths["/api/v1/jobs/{job_id}/plots/{name}.png"]["get"]["responses"]
    assert "image/png" in plot["200"]["content"]
    links = paths["/api/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert links["getJobMetrics"]["parameters"]["job_id"] == "$response.body#/id"


def test_the_docs_page_works_offline_under_a_strict_csp(client: FlaskClient) -> None:
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "http" not in html  # no inline script, no CDN
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        asset = client.get(src)
        assert asset.status_code == 200 and len(asset.data) > 100, src


def test_query_parameters_are_checked_by_the_model(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    bad = client.get("/api/v1/jobs?limit=abc", headers=alice).get_json()["error"]
    assert bad["code"] == "invalid_parameter" and bad["details"][0]["loc"] == "limit"
    typo = client.get("/api/v1/jobs?limt=5", headers=alice).get_json()["error"]
    assert typo["message"] == "unknown parameter 'limt'"
    assert client.get("/api/v1/jobs?limit=&status=", headers=alice).status_code == 200
    over = client.get("/api/v1/jobs?limit=101", headers=alice).get_json()["error"]
    assert "between 1 and 100" in over["message"]  # TRAINYARD_PAGE_LIMIT
    both = client.get(
        "/api/v1/jobs/00000000-0000-0000-0000-000000000000/traces?at_step=1&from_step=0",
        headers=alice,
    )
    assert both.status_code == 400 and "not both" in both.get_json()["error"]["message"]


def test_a_body_that_is_not_an_object_or_misses_a_field_is_named(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    for body in ("[1, 2]", '"x"', "{", "\xff"):
        resp = client.post("/api/v1/jobs", data=body, headers=alice)
        assert resp.status_code == 400, body
        assert resp.get_json()["error"]["details"][0]["loc"] == "body", body
    empty = client.post("/api/v1/jobs", headers=alice).get_json()["error"]
    assert empty["details"][0]["loc"] == "spec"
    kind = client.post("/api/v1/jobs", json={"kind": "x"}, headers=alice).get_json()["error"]
    assert kind["details"][0]["loc"] == "kind" and "'train' or 'infer'" in kind["message"]


def test_a_body_nested_near_the_parsers_limit_is_a_400_not_a_500(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    for depth in (65, 500, 978, 979):
        deep = '{"kind": "infer", "inputs": ' + "[" * depth + "1" + "]" * depth + "}"
        resp = client.post(
            "/api/v1/jobs", data=deep, headers={**alice, "Idempotency-Key": f"k{depth}"}
        )
        assert resp.status_code == 400, depth
        error = resp.get_json()["error"]
        assert error["details"][0]["loc"] == "body", depth
        # Near the limit of Python's parser it is already refused as not JSON at all.
        assert depth > 500 or "nested more than 64 levels" in error["message"]


def test_wait_seconds_is_a_number_not_a_bool_a_string_or_null(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    path = "/api/v1/models/00000000-0000-0000-0000-000000000000/predict"
    for wait in (True, "1", None, -1, 601):
        body = {"inputs": [[0.0] * 10], "wait_seconds": wait}
        error = client.post(path, json=body, headers=alice).get_json()["error"]
        assert error["details"][0]["loc"] == "wait_seconds", wait


def test_parameters_given_twice_or_unknown_anywhere_are_named(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    twice = client.get("/api/v1/jobs?limit=5&limit=6", headers=alice).get_json()["error"]
    assert twice["message"] == "'limit' is given more than once"
    job = "/api/v1/jobs/00000000-0000-0000-0000-000000000000"
    typo = client.get(f"{job}?verbose=1", headers=alice).get_json()["error"]
    assert typo["message"] == "unknown parameter 'verbose'"
    unnamed = client.get("/api/v1/jobs?=5", headers=alice).get_json()["error"]
    assert unnamed["message"] == "unknown parameter ''"
    one = client.get(f"/api/v1/compare?ids={uuid.uuid4()},", headers=alice).get_json()["error"]
    assert "must list 2 to 10 job ids" in one["message"]
    long_layer = "a" * 255  # as long as layer_traces.layer holds
    assert client.get(f"{job}/traces?layer={long_layer}", headers=alice).status_code == 404


def test_a_non_admin_is_refused_before_its_parameters_are_read(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    resp = client.get("/api/v1/tokens?bogus=1&owner=" + "x" * 300, headers=alice)
    assert resp.status_code == 403


def test_the_stream_s_event_data_is_in_the_document(client: FlaskClient) -> None:
    doc = _doc(client)
    ok = doc["paths"]["/api/v1/jobs/{job_id}/stream"]["get"]["responses"]["200"]
    names = ok["content"]["text/event-stream"]["schema"]["properties"]["event"]["enum"]
    assert set(ok["x-event-data"]) == set(names)
    for ref in ok["x-event-data"].values():
        schema = doc["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
        assert schema["type"] == "object" and schema["required"]
    metrics = doc["components"]["schemas"]["StreamMetrics"]
    assert set(metrics["required"]) == {"step", "epoch", "values"}
