"""The OpenAPI document and a page to read it (Swagger UI), with no token: a contract is
public. The document is spectree's, from the routes' models; this adds only what
spectree cannot say: the media types of the binary answers, and the links a client
follows from a submitted job to its results."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import flask_openapi3_swagger
from flask import Blueprint, Response, jsonify, send_from_directory, url_for
from prometheus_client import CONTENT_TYPE_LATEST

from api.contract import contract
from shared.contract.responses import STREAM_EVENTS

bp = Blueprint("docs", __name__)

SWAGGER = Path(flask_openapi3_swagger.__file__).parent / "templates" / "swagger"
STATIC = Path(__file__).resolve().parent.parent / "static"
# Swagger UI's own files only; its inline styles need 'unsafe-inline' for style.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)
BINARY = {
    "downloadStateDict": ("application/octet-stream", "The state_dict as safetensors"),
    "getJobPlot": ("image/png", "The plot"),
    "getSweepPlot": ("image/png", "The plot"),
    "getMetrics": (CONTENT_TYPE_LATEST, "Prometheus metrics in the text format"),
}
# One Server-Sent Event of GET /jobs/<id>/stream, as a client parses it: `data` is one
# line of JSON text; `id` the cursor to reconnect with (Last-Event-ID).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": ["lifecycle", "progress", "metrics", "traces", "logs", "end"],
        },
        "id": {"type": "string", "pattern": "^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "data"],
}
# From a submitted job (its `id`) to everything about it: schemathesis follows these.
JOB_LINKS: dict[str, dict[str, str]] = {
    "getJob": {}, "getJobEvents": {}, "getJobMetrics": {}, "getJobTraces": {},
    "getJobSummary": {}, "getJobLogs": {}, "listCheckpoints": {}, "cancelJob": {}, "preemptJob": {},
    "deleteJob": {}, "getJobPlot": {"name": "loss"}, "downloadStateDict": {"ref": "latest"},
    "predict": {},
}  # fmt: skip
# From a created sweep to what can be done with it.
SWEEP_LINKS: dict[str, dict[str, str]] = {
    "getSweep": {}, "cancelSweep": {}, "getSweepPlot": {"name": "history"},
}  # fmt: skip
_lock = threading.Lock()
_document: dict[str, Any] | None = None


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, built once per process."""
    global _document
    with _lock:
        if _document is None:
            _document = _finished(copy.deepcopy(contract.spec))
        return _document


def _finished(doc: dict[str, Any]) -> dict[str, Any]:
    operations = {
        op["operationId"]: op
        for item in doc["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for op_id, (media, description) in BINARY.items():
        ok = operations[op_id]["responses"]["200"]
        ok["description"] = description
        ok["content"] = {media: {"schema": {"type": "string", "format": "binary"}}}
    stream = operations["streamJob"]["responses"]["200"]
    stream["description"] = "Server-Sent Events until the job ends (or max_seconds)"
    stream["content"] = {"text/event-stream": {"schema": SSE_EVENT}}
    # What each event's `data` line holds, by the event's name.
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in STREAM_EVENTS.values():
        name = model.__name__
        schemas[name] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schemas[name].pop("$defs", {}))
    stream["x-event-data"] = {
        kind: {"$ref": f"#/components/schemas/{model.__name__}"}
        for kind, model in STREAM_EVENTS.items()
    }
    links = {
        target: {
            "operationId": target,
            "parameters": {"job_id": "$response.body#/id", **constants},
        }
        for target, constants in JOB_LINKS.items()
    }
    operations["submitJob"]["responses"]["202"]["links"] = links
    operations["createSweep"]["responses"]["201"]["links"] = {
        target: {
            "operationId": target,
            "parameters": {"sweep_id": "$response.body#/id", **constants},
        }
        for target, constants in SWEEP_LINKS.items()
    }
    for op in operations.values():
        for parameter in op.get("parameters", []):
            # An absent parameter is absent, not null: a query string has no null.
            if parameter.get("schema", {}).get("default", "") is None:
                del parameter["schema"]["default"]
    return doc


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    """The API's OpenAPI 3.1 document."""
    response = jsonify(document())
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/api/v1/docs/")
def page() -> Response:
    """Swagger UI over the document: every route, its parameters, bodies and answers."""
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Trainyard API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{url_for("docs.swagger", name="css/swagger-ui.css")}">
</head><body><div id="swagger-ui"></div>
<script src="{url_for("docs.swagger", name="js/swagger-ui-bundle.js")}"></script>
<script src="{url_for("docs.swagger", name="js/swagger-ui-standalone-preset.js")}"></script>
<script src="{url_for("docs.script")}"></script>
</body></html>"""
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/api/v1/docs/swagger/<path:name>")
def swagger(name: str) -> Response:
    """Swagger UI's bundled files (from the flask-openapi3-swagger package: no CDN)."""
    return _asset(send_from_directory(SWAGGER, name))


@bp.get("/api/v1/docs/docs.js")
def script() -> Response:
    return _asset(send_from_directory(STATIC, "docs.js"))


def _asset(response: Response) -> Response:
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response
