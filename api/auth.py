"""Bearer tokens on every /api/v1 route: the token's owner scopes every query, its
scopes say what it may do, and every refusal is written to the audit log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Blueprint, g, request
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from api.context import db, services
from shared.audit import audit
from shared.errors import Forbidden, Unauthorized
from shared.models import ApiToken, utcnow
from shared.tokens import check_token, hash_token, is_expired

READ_METHODS = ("GET", "HEAD", "OPTIONS")
# POSTs that only compute an answer from the body and store nothing: `read` is enough.
READ_ONLY_POSTS = frozenset({"api_v1.models.summary"})
# Failed authentications written to the audit log per client address and minute (per API
# process); past it they are counted in one last row, not written one by one, so a flood
# of made-up tokens cannot turn into a flood of writes.
AUDITED_FAILURES_PER_MINUTE = 20


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
        token = _live_token(plaintext.strip())
        reads = request.method in READ_METHODS or request.endpoint in READ_ONLY_POSTS
        scope = "read" if reads else "submit"
        if scope not in token.scopes.split(","):
            raise Forbidden(
                f"this token may {token.scopes.replace(',', ', ')}; "
                f"{request.method} needs scope {scope!r}",
                details=[{"loc": "Authorization", "msg": f"needs scope {scope}"}],
            )
        now = utcnow()
        # A write per request would serialise the API on SQLite; a minute's precision will do.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            db().execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
            db().commit()
            set_committed_value(token, "last_used_at", now)
        g.owner, g.token = token.owner, token

    return bp


def _live_token(plaintext: str) -> ApiToken:
    """The live token with this plaintext (from the process's cache when it may be
    trusted), or a 401 naming why not."""
    cache = services().tokens
    hashed = hash_token(plaintext)
    token, generation = cache.lookup(hashed)
    if token is not None and not is_expired(token):
        return token
    if token is not None:
        cache.forget(hashed)
    token, why_not = check_token(session=db(), plaintext=plaintext)
    if why_not is not None:
        _refuse(why_not, plaintext)
    assert token is not None
    cache.keep(hashed, token, generation)
    return token


class FailureBudget:
    """How many failed authentications of one address this minute are still written."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._minute = -1
        self._counts: dict[str, int] = {}

    def take(self, address: str) -> int:
        """This failure's number within the address's minute (1, 2, ...)."""
        minute = int(self._clock() // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self._counts = minute, {}
            self._counts[address] = self._counts.get(address, 0) + 1
            return self._counts[address]


_FAILURES = FailureBudget(AUDITED_FAILURES_PER_MINUTE)


def _refuse(message: str, plaintext: str | None) -> None:
    """Log the failed authentication (no secret: the token's first characters at most),
    within the address's budget, then 401."""
    address = request.remote_addr or "?"
    number = _FAILURES.take(address)
    if number <= _FAILURES.per_minute:
        detail = message
        if number == _FAILURES.per_minute:
            detail += f"; further failures from {address} this minute are not logged"
        session = services().sessions()
        try:
            audit(session=session, action="auth_failed", owner=None,
                  token_prefix=plaintext[:10] if plaintext else None,
                  target=request.path[:255], remote_addr=request.remote_addr,
                  detail=detail)  # fmt: skip
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
