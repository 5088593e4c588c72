"""The serving line's journal: records of answered requests kept in Redis until the
database has them, so a worker killed between an answer and its record's write loses
nothing.

A record enters the worker's journal (a hash, call id -> JSON) in the same MULTI as its
answer: a caller that has an answer has a record in Redis. The PredictionRecorder
removes entries once their batch is committed. A worker starting up re-reads its own
journal, and every ADOPT_SECONDS it adopts the journals of workers that stopped serving
(their worker key lapsed): it renames such a journal (an atomic claim: one adopter
wins), moves its entries into its own, and writes them. Writing a record twice is a
no-op (repository.record_served), so a record read again after a crash costs nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis
from pydantic import ValidationError

from shared.repository import ServedPrediction
from shared.serving import JOURNALS_KEY, journal_key, worker_key

log = logging.getLogger(__name__)

# How often a serving worker looks for journals that no live worker owns.
ADOPT_SECONDS = 30.0


class Journal:
    """One worker's journal."""

    def __init__(self, client: redis.Redis, worker: str) -> None:
        self._redis = client
        self.worker = worker
        self.key = journal_key(worker)

    def stage(self, pipe: Any, records: Sequence[ServedPrediction]) -> None:
        """Add `records` in `pipe` (the MULTI that sends their answers)."""
        if records:
            pipe.hset(self.key, mapping={str(r.call.id): r.encode() for r in records})
            pipe.sadd(JOURNALS_KEY, self.worker)

    def done(self, records: Iterable[ServedPrediction]) -> None:
        """The database has `records` (or refuses them for good): forget them."""
        ids = [str(r.call.id) for r in records]
        if not ids:
            return
        try:
            self._redis.hdel(self.key, *ids)
        except redis.RedisError:  # they stay, and are written again (a no-op) later
            log.warning("could not clear %d journal entries", len(ids), exc_info=True)

    def recover(self) -> list[ServedPrediction]:
        """This worker's unwritten records from before (a restart), plus adopted ones."""
        own = self._read(self.key)
        return own + self.adopt()

    def adopt(self) -> list[ServedPrediction]:
        """Move the journals of workers no longer serving into this one; their records."""
        found: list[ServedPrediction] = []
        try:
            owners = cast("set[bytes]", self._redis.smembers(JOURNALS_KEY))
            for raw_owner in owners:
                owner = raw_owner.decode()
                if owner == self.worker or self._redis.exists(worker_key(owner)):
                    continue
                found += self._adopt(owner)
        except redis.RedisError:
            log.warning("could not look for orphaned serving journals", exc_info=True)
        return found

    def _adopt(self, owner: str) -> list[ServedPrediction]:
        claimed = f"{journal_key(owner)}:adopted:{uuid.uuid4()}"
        try:
            self._redis.rename(journal_key(owner), claimed)
        except redis.ResponseError:  # no such key: empty, or another worker took it
            self._redis.srem(JOURNALS_KEY, owner)
            return []
        entries = cast("dict[bytes, bytes]", self._redis.hgetall(claimed))
        with self._redis.pipeline(transaction=True) as pipe:
            if entries:
                pipe.hset(self.key, mapping=entries)
                pipe.sadd(JOURNALS_KEY, self.worker)
            pipe.delete(claimed)
            pipe.srem(JOURNALS_KEY, owner)
            pipe.execute()
        log.info("adopted %d unwritten prediction records of %s", len(entries), owner)
        return _decoded(entries)

    def _read(self, key: str) -> list[ServedPrediction]:
        try:
            return _decoded(cast("dict[bytes, bytes]", self._redis.hgetall(key)))
        except redis.RedisError:
            log.warning("could not read the serving journal", exc_info=True)
            return []


def _decoded(entries: dict[bytes, bytes]) -> list[ServedPrediction]:
    out = []
    for call_id, raw in entries.items():
        try:
            out.append(ServedPrediction.decode(raw))
        except (ValueError, KeyError, TypeError, ValidationError):
            log.error("unreadable journal entry %s left in place", call_id.decode(errors="replace"))
    return out
