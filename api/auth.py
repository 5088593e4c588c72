"""Bearer tokens on every /api/v1 route; the token's owner scopes every query."""

from __future__ import annotations

from flask import Blueprint, g, request

from api.context import db
from shared.errors import Unauthorized
from shared.models import utcnow
from shared.tokens import find_token


def protected_blueprint() -> Blueprint:
    """The /api/v1 parent blueprint: rejects requests without a live token (401)."""
    bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")

    @bp.before_request
    def _require_token() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, plaintext = header.partition(" ")
        if scheme.lower() != "bearer" or not plaintext.strip():
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        token = find_token(session=db(), plaintext=plaintext.strip())
        if token is None:
            raise Unauthorized("unknown or revoked token")
        now = utcnow()
        # A write per request would serialise the API on SQLite; a minute's precision will do.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            token.last_used_at = now
            db().commit()
        g.owner = token.owner

    return bp


def current_owner() -> str:
    """The owner of the request's token."""
    owner: str = g.owner
    return owner
