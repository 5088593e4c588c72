"""Where the serving line may start: not in a prefork worker, which forks new children
while the line's threads run."""

from __future__ import annotations

from types import SimpleNamespace

from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool

from worker.serving_signals import _forks_children


def test_only_a_prefork_pool_keeps_the_line_out() -> None:
    assert _forks_children(SimpleNamespace(pool=PreforkPool(limit=1)))
    assert not _forks_children(SimpleNamespace(pool=SoloPool()))
    assert not _forks_children(SimpleNamespace(pool=ThreadPool(limit=1)))
    assert not _forks_children(SimpleNamespace())  # no pool known: the solo default
