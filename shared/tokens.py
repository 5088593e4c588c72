"""API tokens: random, shown once, stored as sha256 only."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import ApiToken, utcnow

_PREFIX = "ty_"


def hash_token(plaintext: str) -> str:
    """sha256 of the token; tokens are 256 random bits, so no salt or slow hash is needed."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(
    *, session: Session, name: str, owner: str, is_admin: bool = False
) -> tuple[str, ApiToken]:
    """Create a token and return (plaintext, row); the plaintext is not stored anywhere."""
    plaintext = _PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        owner=owner,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        is_admin=is_admin,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return plaintext, row


def find_token(*, session: Session, plaintext: str) -> ApiToken | None:
    """The live (not revoked) token with this plaintext, or None."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_token(*, session: Session, token_id: int, owner: str) -> bool:
    """Revoke one of the owner's tokens; False if there is no such live token."""
    row = session.get(ApiToken, token_id)
    if row is None or row.owner != owner or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True
