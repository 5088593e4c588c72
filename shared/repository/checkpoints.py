"""Checkpoint rows: store (pruning old resume states), list, find by id or tag, resume."""

from __future__ import annotations

import uuid
from typing import TypeVar

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.orm import Session, undefer

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
    resume_state: bytes | None = None,
    keep_resumable: int | None = None,
) -> Checkpoint:
    """Store one checkpoint. With `resume_state`, keep the newest `keep_resumable` resume
    states of the job and prune the older ones in the same transaction."""
    ckpt = Checkpoint(
        job_id=job_id,
        step=step,
        epoch=epoch,
        tag=tag,
        model_state=model_state,
        optimizer_state=optimizer_state,
        resume_state=resume_state,
        sha256=sha256,
        size=len(model_state),
        created_at=utcnow(),
    )
    session.add(ckpt)
    session.flush()
    if resume_state is not None and keep_resumable is not None:
        _prune_resumable(session, job_id, keep_resumable)
    return ckpt


def _prune_resumable(session: Session, job_id: uuid.UUID, keep: int) -> None:
    """Older resume states than the newest `keep`: a periodic ("step") checkpoint goes
    whole; an epoch checkpoint keeps its weights and optimizer state for the user."""
    resumable = (Checkpoint.job_id == job_id, Checkpoint.resume_state.is_not(None))
    kept = (
        select(Checkpoint.id)
        .where(*resumable)
        .order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc())
        .limit(keep)
    )
    older = (*resumable, Checkpoint.id.not_in(kept.scalar_subquery()))
    session.execute(delete(Checkpoint).where(*older, Checkpoint.tag == "step"))
    session.execute(update(Checkpoint).where(*older).values(resume_state=None))


def latest_resumable(*, session: Session, job_id: uuid.UUID) -> Checkpoint | None:
    """The newest checkpoint a fit can go on from (weights are loaded with it)."""
    query = (
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id, Checkpoint.resume_state.is_not(None))
        .order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc())
        .options(undefer(Checkpoint.model_state), undefer(Checkpoint.optimizer_state),
                 undefer(Checkpoint.resume_state))
        .limit(1)
    )  # fmt: skip
    return session.scalars(query).first()


def delete_checkpoints_after(*, session: Session, job_id: uuid.UUID, step: int) -> None:
    """A resumed job's checkpoints past its resume step, and any "final" one: the attempt
    that wrote them did not finish, and the resumed one writes its own."""
    session.execute(
        delete(Checkpoint).where(
            Checkpoint.job_id == job_id, or_(Checkpoint.step > step, Checkpoint.tag == "final")
        )
    )


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
