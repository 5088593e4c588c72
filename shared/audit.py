"""The audit log: who did what security-relevant thing, and when (audit_events)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.models import AuditEvent, utcnow


def audit(
    *,
    session: Session,
    action: str,
    owner: str | None,
    token_prefix: str | None = None,
    target: str = "",
    remote_addr: str | None = None,
    detail: str = "",
) -> None:
    """Append one row to the audit log (in the caller's transaction)."""
    session.add(
        AuditEvent(
            at=utcnow(),
            action=action,
            owner=owner,
            token_prefix=token_prefix,
            target=target[:255],
            remote_addr=remote_addr,
            detail=detail[:2000],
        )
    )
