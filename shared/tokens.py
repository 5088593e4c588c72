"""API tokens: random, shown once, stored as sha256 only; scoped, expiring, revocable."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.audit import audit
from shared.errors import NotFound, SpecError
from shared.models import ApiToken, utcnow

_PREFIX = "ty_"
SCOPES = ("read", "submit")  # an admin token (is_admin) also manages tokens
DEFAULT_SCOPES = ("read", "submit")
_DURATION = re.compile(r"(\d{1,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def hash_token(plaintext: str) -> str:
    """sha256 of the token; tokens are 256 random bits, so no salt or slow hash is needed."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '90m', '2w' as a timedelta; SpecError naming `expires` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise SpecError.at("expires", f"{text!r} is not a duration such as 30d, 12h, 90m or 2w")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The scopes, known ones only, at least one."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise SpecError.at("scopes", f"scopes are some of {list(SCOPES)}, got {list(scopes)}")
    return tuple(s for s in SCOPES if s in scopes)


def create_token(
    *,
    session: Session,
    name: str,
    owner: str,
    is_admin: bool = False,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    expires_in: timedelta | None = None,
) -> tuple[str, ApiToken]:
    """Create a token and return (plaintext, row); the plaintext is not stored anywhere."""
    plaintext = _PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        name=name,
        owner=owner,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        is_admin=is_admin,
        created_at=now,
        scopes=",".join(check_scopes(scopes)),
        expires_at=now + expires_in if expires_in is not None else None,
    )
    session.add(row)
    session.flush()
    audit(session=session, action="token_created", owner=owner, token_prefix=row.prefix,
          target=f"token {row.id}", detail=f"name {name}, scopes {row.scopes}")  # fmt: skip
    return plaintext, row


def find_token(*, session: Session, plaintext: str) -> ApiToken | None:
    """The token with this plaintext if it is live (not revoked, not expired), else None."""
    row, why_not = check_token(session=session, plaintext=plaintext)
    return row if why_not is None else None


def check_token(*, session: Session, plaintext: str) -> tuple[ApiToken | None, str | None]:
    """The token with this plaintext and, when it is not live, why (one lookup). Revoked
    and expired tokens were real, and their users need to know which; an unknown token
    is not told apart from a revoked one."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext)))
    if row is None or row.revoked_at is not None:
        return row, "unknown or revoked token"
    if is_expired(row):
        return row, "expired token: ask for a new one (trainyard token rotate)"
    return row, None


def is_expired(row: ApiToken, now: datetime | None = None) -> bool:
    """Whether the token's expiry has passed."""
    return row.expires_at is not None and row.expires_at <= (now or utcnow())


def list_tokens(*, session: Session, owner: str | None = None) -> list[ApiToken]:
    """Tokens (every owner's, or one owner's), newest first; revoked ones included."""
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if owner is not None:
        query = query.where(ApiToken.owner == owner)
    return list(session.scalars(query))


def get_token(*, session: Session, ref: str) -> ApiToken:
    """A token by id or by its printed prefix (ty_xxxxxxx); NotFound otherwise."""
    if ref.isdigit():
        row = session.get(ApiToken, int(ref)) if int(ref) < 2**63 else None
    else:
        row = session.scalar(select(ApiToken).where(ApiToken.prefix == ref))
    if row is None:
        raise NotFound(f"no token {ref!r}", details=[{"loc": "token", "msg": "not found"}])
    return row


def revoke_token(*, session: Session, token: ApiToken, by: str) -> bool:
    """Revoke a token (at once: the next request with it is a 401); False if it was."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    audit(session=session, action="token_revoked", owner=token.owner,
          token_prefix=token.prefix, target=f"token {token.id}", detail=f"by {by}")  # fmt: skip
    return True


def rotate_token(*, session: Session, token: ApiToken, by: str) -> tuple[str, ApiToken]:
    """A new token with the old one's name, owner, scopes and lifetime; the old one is
    revoked. Returns (plaintext, new row)."""
    if token.revoked_at is not None:
        raise SpecError.at("token", f"token {token.id} is revoked: create a new one instead")
    lifetime = (
        token.expires_at - token.created_at
        if token.expires_at is not None and token.created_at is not None
        else None
    )
    revoke_token(session=session, token=token, by=by)
    plaintext, row = create_token(
        session=session, name=token.name, owner=token.owner, is_admin=token.is_admin,
        scopes=tuple(token.scopes.split(",")), expires_in=lifetime,
    )  # fmt: skip
    audit(session=session, action="token_rotated", owner=token.owner, token_prefix=row.prefix,
          target=f"token {token.id} -> {row.id}", detail=f"by {by}")  # fmt: skip
    return plaintext, row
