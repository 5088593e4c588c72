"""Tokens, for admins: list every token (never its secret) and revoke one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from api.auth import current_token
from api.context import db, services
from api.contract import answers, contract, query_model
from shared.contract.queries import NoQuery, TokenListQuery
from shared.contract.responses import Token, Tokens
from shared.errors import Forbidden
from shared.models import ApiToken
from shared.tokens import get_token, is_expired, list_tokens, revoke_token

bp = Blueprint("tokens", __name__)


def _admin() -> str:
    token = current_token()
    if not token.is_admin:
        raise Forbidden(
            "managing tokens needs an admin token (trainyard token create --admin)",
            details=[{"loc": "Authorization", "msg": "not an admin token"}],
        )
    return f"{token.owner} ({token.prefix})"


def token_json(row: ApiToken) -> dict[str, Any]:
    """A token's metadata: what it may do and whether it still works; no secret."""
    state = "revoked" if row.revoked_at else ("expired" if is_expired(row) else "live")
    return {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "prefix": row.prefix,
        "scopes": row.scopes.split(","),
        "admin": row.is_admin,
        "state": state,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@bp.before_request
def _admins_only() -> None:
    # Before the parameters are looked at: a non-admin learns nothing but "not allowed".
    _admin()


@bp.get("/tokens")
@contract.validate(query=TokenListQuery, resp=answers(HTTP_200=Tokens), tags=["tokens"])
def tokens() -> Response:
    """Every token (or one owner's: `?owner=`), newest first; admin tokens only."""
    rows = list_tokens(session=db(), owner=query_model(TokenListQuery).owner)
    return jsonify({"tokens": [token_json(r) for r in rows]})


@bp.delete("/tokens/<int:token_id>")
@contract.validate(
    query=NoQuery, resp=answers("HTTP_404", "HTTP_409", HTTP_200=Token), tags=["tokens"]
)
def revoke(token_id: int) -> Response:
    """Revoke a token: its next request is a 401; admin tokens only."""
    by = _admin()
    session = db()
    row = get_token(session=session, ref=str(token_id))
    revoke_token(session=session, token=row, by=by)
    session.commit()
    services().revocations.announce()  # every API process drops its cached tokens
    return jsonify(token_json(row))
