"""Checkpoint rows: store, list, and find one by id or by tag."""

from __future__ import annotations

import uuid
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from shared.errors import NotFound
from shared.models import Checkpoint, utcnow

T = TypeVar("T")  # the row type of a select()


def save_checkpoint(
    *,
    session: Session,
    job_id: uuid.UUID,
    step: int,
    epoch: int,
    tag: str,
    model_state: bytes,
    optimizer_state: bytes | None,
    sha256: str,
) -> Checkpoint:
    """Store one checkpoint; a retried job overwrites nothing, it adds newer rows."""
    ckpt = Checkpoint(
        job_id=job_id,
        step=step,
        epoch=epoch,
        tag=tag,
        model_state=model_state,
        optimizer_state=optimizer_state,
        sha256=sha256,
        size=len(model_state),
        created_at=utcnow(),
    )
    session.add(ckpt)
    session.flush()
    return ckpt


def list_checkpoints(*, session: Session, job_id: uuid.UUID) -> list[Checkpoint]:
    """A job's checkpoints by step (weights are deferred: not loaded here)."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return list(session.scalars(query.order_by(Checkpoint.step, Checkpoint.created_at)))


def _checkpoint_by_ref(query: Select[T], job_id: uuid.UUID, ref: str) -> Select[T]:
    """`query` narrowed to the checkpoint `ref` names: an id, or the newest with a tag."""
    query = query.where(Checkpoint.job_id == job_id)
    if ref in ("final", "epoch", "best"):
        query = query.where(Checkpoint.tag == ref)
    elif ref != "latest":
        try:
            query = query.where(Checkpoint.id == uuid.UUID(ref))
        except ValueError:
            raise NotFound(f"checkpoint {ref!r} not found") from None
    return query.order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc()).limit(1)


def get_checkpoint(*, session: Session, job_id: uuid.UUID, ref: str) -> Checkpoint:
    """A checkpoint by id, or the newest one with tag 'final' / 'epoch' / 'best' ('latest':
    the newest of any tag)."""
    ckpt = session.scalars(_checkpoint_by_ref(select(Checkpoint), job_id, ref)).first()
    if ckpt is None:
        raise NotFound(f"checkpoint {ref!r} not found for job {job_id}")
    return ckpt


def checkpoint_id(*, session: Session, job_id: uuid.UUID, ref: str) -> uuid.UUID:
    """The id `get_checkpoint` would return, without reading the weights."""
    found = session.scalars(_checkpoint_by_ref(select(Checkpoint.id), job_id, ref)).first()
    if found is None:
        raise NotFound(f"checkpoint {ref!r} not found for job {job_id}")
    return found
