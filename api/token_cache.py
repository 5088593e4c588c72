"""Checked tokens kept in memory for a while, so a request need not look its token up.

An entry is used only while the revocation counter (shared.revocations) reads what it
read when the token was checked, and for at most TRAINYARD_TOKEN_CACHE_SECONDS: a token
revoked through the API or the CLI is refused on its next request, in every process. An
expired token is refused from the entry itself. One Redis GET replaces a database
round trip set (connection check, BEGIN, SELECT, ROLLBACK) on every authenticated request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cachetools import TTLCache

from shared.models import ApiToken
from shared.revocations import Revocations


@dataclass(frozen=True, slots=True)
class _Entry:
    token: ApiToken  # a transient copy, in no session: a rollback cannot expire it
    generation: int


class TokenCache:
    """token hash -> checked ApiToken, each kept `ttl_seconds` at most, bounded (least
    recently used goes first: cachetools' TTLCache, behind a lock)."""

    def __init__(self, revocations: Revocations, ttl_seconds: float, max_entries: int = 4096):
        self._revocations = revocations
        self._ttl = ttl_seconds
        self._entries: TTLCache[str, _Entry] = TTLCache(
            maxsize=max_entries, ttl=max(ttl_seconds, 1e-9), timer=time.monotonic
        )
        self._lock = threading.Lock()

    def lookup(self, token_hash: str) -> tuple[ApiToken | None, int | None]:
        """(the cached token or None, the counter now: pass it to `keep`)."""
        if self._ttl <= 0:
            return None, None
        generation = self._revocations.generation()
        if generation is None:
            return None, None
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None, generation
            if entry.generation != generation:
                del self._entries[token_hash]
                return None, generation
            return entry.token, generation

    def keep(self, token_hash: str, token: ApiToken, generation: int | None) -> None:
        """Remember a live token checked while the counter read `generation`."""
        if self._ttl <= 0 or generation is None:
            return
        entry = _Entry(_copy(token), generation)
        with self._lock:
            self._entries[token_hash] = entry

    def forget(self, token_hash: str) -> None:
        with self._lock:
            self._entries.pop(token_hash, None)


def _copy(token: ApiToken) -> ApiToken:
    """The row's column values in a new object that belongs to no session (the checked row
    stays in its request's session, where a rollback would expire it)."""
    columns = ApiToken.__table__.columns.keys()
    return ApiToken(**{name: getattr(token, name) for name in columns})
