"""The API's contract: spectree validates requests against the pydantic models of
`shared.contract` and generates the OpenAPI 3.1 document from the same models.

A request that does not fit is refused with the API's own error shape, a 400 naming the
parameter or field. Answers are checked against their models where
TRAINYARD_CHECK_RESPONSES is on (the test suite; a mismatch is a 500 and a log line),
and left alone otherwise: a check costs a second parse of every answer.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Response as FlaskResponse
from flask import current_app, request
from pydantic import BaseModel, ValidationError
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData
from spectree.plugins.flask_plugin import FlaskPlugin

from shared.contract.errors import ErrorBody
from shared.contract.queries import Query
from shared.errors import BadParameter, SpecError, pydantic_details

M = TypeVar("M", bound=BaseModel)
VERSION = "1"
# Every route can answer these: a bad parameter or text (400), a missing token (401), a
# scope the token lacks (403), a body over the limit (413), a request line over
# gunicorn's limit (414), too many requests (429), the database down (503).
COMMON_ERRORS = (
    "HTTP_400", "HTTP_401", "HTTP_403", "HTTP_413", "HTTP_414", "HTTP_429", "HTTP_503",
)  # fmt: skip


class JsonBodyPlugin(FlaskPlugin):
    """Flask's plugin, with two differences: every body is read as JSON whatever its
    Content-Type (`curl -d` says form), through `ApiRequest.get_json` (strict UTF-8, an
    object, storable text); and answers are checked only where the app asks for it."""

    FORM_MIMETYPE = ()  # type: ignore[assignment]  # no body is read as a form

    def request_validation(
        self, request: Any, query: Any, json: Any, form: Any, headers: Any, cookies: Any
    ) -> None:
        """spectree's, raising the API's 400 itself: spectree would first JSON-encode the
        errors with their inputs (the whole body), which a body nested near the parser's
        limit cannot survive, and which costs a second encoding of every refused body."""
        if query is not None:
            _refuse_repeated(request.args)
        try:
            super().request_validation(  # type: ignore[no-untyped-call]
                request, query, json, form, headers, cookies
            )
        except ValidationError as exc:
            raise _as_api_error(exc) from None

    def register_route(self, app: Any) -> None:
        """Nothing: api.routes.docs serves the document and its page (spectree's own
        pages would load their scripts from a CDN)."""

    def validate_response(
        self, resp: Any, resp_model: Any, skip_validation: bool, force_resp_serialize: bool
    ) -> Any:
        if isinstance(resp, FlaskResponse) and resp.is_streamed:
            # spectree reads the whole body to check it: a live stream would be held back
            # until it closed. A stream has no JSON model to check anyway.
            return resp, None
        checking = current_app.config.get("TRAINYARD_CHECK_RESPONSES", False)
        return super().validate_response(
            resp, resp_model, skip_validation or not checking, force_resp_serialize
        )


def _refuse_repeated(args: Any) -> None:
    for name in args:
        if len(args.getlist(name)) > 1:
            raise BadParameter(
                f"{name!r} is given more than once", details=[{"loc": name, "msg": "repeated"}]
            )


def _after(
    req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any = None
) -> None:
    """An answer that breaks the contract is the server's bug: a 500 and a log line."""
    if error is not None:
        current_app.logger.error("answer of %s breaks its model: %s", request.path, error)
        raise RuntimeError("response does not match its schema") from error


def _as_api_error(exc: ValidationError) -> BadParameter | SpecError:
    query = exc.title in _QUERY_MODELS
    where = "parameter" if query else "field"
    details: list[dict[str, Any]] = []
    lines: list[str] = []
    for err, detail in zip(exc.errors(include_url=False), pydantic_details(exc, ""), strict=True):
        loc = detail["loc"].lstrip(".")
        if query and err["loc"]:  # flat: drop the union member (`limit.int`); '' stays ''
            loc = str(err["loc"][0])
            if any(d["loc"] == loc for d in details):
                continue
        elif exc.title == "JobRequest":  # a tagged union: its first part is the tag
            loc = loc.partition(".")[2] if err["loc"] else "kind"
        elif not err["loc"]:  # a check of the whole query or body
            loc = "query" if query else "body"
        msg = str(detail["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown {where}"
            lines.append(f"unknown {where} {loc!r}")
        else:
            lines.append(f"{loc}: {msg}")
        details.append({"loc": loc, "msg": msg})
    if query:
        return BadParameter(lines[0], details=details)
    prefix = "invalid spec: " if details[0]["loc"].startswith("spec.") else ""
    return SpecError(prefix + lines[0], details=details)


def _query_models() -> set[str]:
    found, todo = set(), [Query]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


def _name(model: type[BaseModel]) -> str:
    # Our model names are unique: no hash suffix in the document's schema names.
    return model.__name__


contract = SpecTree(
    "flask",
    backend=JsonBodyPlugin,
    title="Trainyard API",
    version=VERSION,
    description="Training and inference jobs for PyTorch models over HTTP. Every route "
    "under /api/v1 needs `Authorization: Bearer <token>` (`trainyard token create`).",
    path="apidoc",
    mode="strict",  # routes without @contract.validate stay out of the document
    annotations=False,
    after=_after,
    validation_error_status=400,
    validation_error_model=ErrorBody,
    naming_strategy=_name,
    nested_naming_strategy=lambda parent, child: child,
    security_schemes=[
        SecurityScheme(
            name="bearer",
            data=SecuritySchemeData(
                type=SecureType.HTTP,
                scheme="bearer",
                description="A token from `trainyard token create` (scopes read, submit, admin)",
            ),
        )
    ],
    security={"bearer": []},
)


def answers(*codes: str, **models: Any) -> Response:
    """A route's documented answers: `models` (HTTP_200=Model, ...), the given bare codes,
    and the errors every route can give, all in the API's error shape."""
    bare = [code for code in codes if int(code.removeprefix("HTTP_")) < 400]
    errors = {code: ErrorBody for code in (*COMMON_ERRORS, *codes) if code not in bare}
    return Response(*bare, **{**errors, **models})


def body_model(model: type[M]) -> M:
    """The validated body of this request (spectree put it on the request)."""
    return _validated(request.context.json, model)  # type: ignore[attr-defined]


def query_model(model: type[M]) -> M:
    """The validated query of this request."""
    return _validated(request.context.query, model)  # type: ignore[attr-defined]


def _validated(found: Any, model: type[M]) -> M:
    if not isinstance(found, model):  # a route asking for a model it did not declare
        raise TypeError(f"this route validates no {model.__name__}")
    return found


_QUERY_MODELS = _query_models()


def within(name: str, value: int | None, default: int, maximum: int) -> int:
    """A size parameter whose bound is a setting (the model's is only a hard limit)."""
    if value is None:
        return default
    if value > maximum:
        raise BadParameter(
            f"{name} must be between 1 and {maximum}", details=[{"loc": name, "msg": "too large"}]
        )
    return value
