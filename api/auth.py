"""Bearer tokens on every /api/v1 route: the token's owner scopes every query, its
scopes say what it may do, and every refusal is written to the audit log."""

from __future__ import annotations

from flask import Blueprint, g, request
from sqlalchemy.orm import Session

from api.context import db, services
from shared.errors import Forbidden, Unauthorized
from shared.models import ApiToken, utcnow
from shared.tokens import audit, find_token, hash_token, is_expired

READ_METHODS = ("GET", "HEAD", "OPTIONS")


def protected_blueprint() -> Blueprint:
    """The /api/v1 parent blueprint: rejects requests without a live token (401) or
    without the scope the method needs (403: `read` for GET, `submit` for the rest)."""
    bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")

    @bp.before_request
    def _require_token() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, plaintext = header.partition(" ")
        if scheme.lower() != "bearer" or not plaintext.strip():
            _refuse("missing bearer token (Authorization: Bearer <token>)", None)
        token = find_token(session=db(), plaintext=plaintext.strip())
        if token is None:
            _refuse(_why_not(plaintext.strip()), plaintext.strip())
        assert token is not None
        scope = "read" if request.method in READ_METHODS else "submit"
        if scope not in token.scopes.split(","):
            raise Forbidden(
                f"this token may {token.scopes.replace(',', ', ')}; "
                f"{request.method} needs scope {scope!r}",
                details=[{"loc": "Authorization", "msg": f"needs scope {scope}"}],
            )
        now = utcnow()
        # A write per request would serialise the API on SQLite; a minute's precision will do.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            token.last_used_at = now
            db().commit()
        g.owner, g.token = token.owner, token

    return bp


def _why_not(plaintext: str) -> str:
    """Why a token is not live, without telling an unknown token from a revoked one's
    owner: revoked and expired tokens were real, and their users need to know which."""
    from sqlalchemy import select

    row = db().scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext)))
    if row is not None and row.revoked_at is None and is_expired(row):
        return "expired token: ask for a new one (trainyard token rotate)"
    return "unknown or revoked token"


def _refuse(message: str, plaintext: str | None) -> None:
    """Log the failed authentication (no secret: the token's first characters at most),
    then 401."""
    session = services().sessions()
    try:
        audit(session=session, action="auth_failed", owner=None,
              token_prefix=plaintext[:10] if plaintext else None,
              target=request.path[:255], remote_addr=request.remote_addr,
              detail=message)  # fmt: skip
        session.commit()
    finally:
        session.close()
    raise Unauthorized(message)


def audit_here(session: Session, action: str, target: str, detail: str = "") -> None:
    """An audit row for what the request's token did (in the request's transaction)."""
    token = current_token()
    audit(session=session, action=action, owner=token.owner, token_prefix=token.prefix,
          target=target, remote_addr=request.remote_addr, detail=detail)  # fmt: skip


def current_owner() -> str:
    """The owner of the request's token."""
    owner: str = g.owner
    return owner


def current_token() -> ApiToken:
    """The request's token (its id, prefix, scopes, whether it is an admin's)."""
    token: ApiToken = g.token
    return token
