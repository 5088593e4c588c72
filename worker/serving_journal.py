"""The serving line's journal: records of answered requests kept in Redis until the
database has them, so a worker killed between an answer and its record's write loses
nothing.

A record enters the worker's journal (a hash, call id -> JSON) before its answer is
sent and before the PredictionRecorder may write it (so the recorder's removal always
comes after the entry): a caller that has an answer has a record in Redis. A worker
starting up re-reads its own journal, and every ADOPT_SECONDS it adopts the journals of
workers that stopped serving (their worker key, WORKER_KEY_SECONDS long, lapsed): one
Lua script moves such a journal's entries into its own, atomically, so a crash at any
point leaves each entry in one journal or the other. Writing a record twice is a
no-op (repository.record_served), so a record read again after a crash costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import cast

import redis

from shared.repository import ServedPrediction
from shared.serving import JOURNALS_KEY, journal_key, worker_key

log = logging.getLogger(__name__)

# How often a serving worker looks for journals that no live worker owns.
ADOPT_SECONDS = 30.0

# Moves a journal (KEYS[1]) into another (KEYS[2]) and updates the owners' set (KEYS[3]);
# returns the moved entries. In slices: unpack() has a bounded stack.
_MOVE = """
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 200 do
  redis.call('HSET', KEYS[2], unpack(entries, i, math.min(i + 199, #entries)))
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
if #entries > 0 then redis.call('SADD', KEYS[3], ARGV[2]) end
return entries
"""


class Journal:
    """One worker's journal."""

    def __init__(self, client: redis.Redis, worker: str) -> None:
        self._redis = client
        self.worker = worker
        self.key = journal_key(worker)
        self._move = client.register_script(_MOVE)

    def add(self, records: Sequence[ServedPrediction]) -> None:
        """Keep `records` until `done` (one round trip); a Redis error is logged: the
        records are still written from memory, only not kept against a crash."""
        if not records:
            return
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, mapping={str(r.call.id): r.encode() for r in records})
                pipe.sadd(JOURNALS_KEY, self.worker)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not journal %d prediction records", len(records), exc_info=True)

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
        moved = cast(
            "list[bytes]",
            self._move(
                keys=[journal_key(owner), self.key, JOURNALS_KEY], args=[owner, self.worker]
            ),
        )
        entries = dict(zip(moved[::2], moved[1::2], strict=True))
        if entries:
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
        except ValueError:  # pydantic's ValidationError is one
            log.error("unreadable journal entry %s left in place", call_id.decode(errors="replace"))
    return out
