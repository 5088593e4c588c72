"""One reader per watched job per API process: the job's live streams share what it reads.

Two hundred browsers on one job would otherwise be two hundred pollers of the same rows.
Here a job's first stream starts a reader (a thread; a greenlet under gunicorn's gevent
worker) that reads the job's feed (shared.job_feed) every poll and keeps what it read in
a buffer; every stream of the job takes its items from that buffer. A stream whose
cursor lies before the buffer (a client with a long way to catch up, or one that
reconnects after the buffer moved on) reads the database itself until it reaches it.

Why a stream may take from the buffer: along the feed, every part of the cursor (event
id, metric step, trace step, log id) only grows, and the reader went on from `base`. So
when `base` is at or before a client's cursor in every part, every item the client lacks
comes after `base`, that is, in the buffer (or not read yet); it is the buffer's items
with a part past the client's cursor. An item's own cursor is the reader's: what the
client is sent as its id is its cursor with each part moved on to the item's (never
back), since every item before it in the buffer was sent or was had already.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from shared.job_feed import Cursor, Item, Read, read_feed

# Items kept per job, by count and by the size of their JSON; a stream that needs older
# ones reads them from the database again.
MAX_BUFFERED = 20_000
MAX_BUFFERED_BYTES = 32 * 2**20
LINGER_SECONDS = 10.0  # a reader outlives its last stream this long: clients reconnect
PART = {"lifecycle": "event", "metrics": "metric", "traces": "trace", "logs": "log"}


def after(item: Item, cursor: Cursor) -> bool:
    """Whether a client at `cursor` still lacks this item."""
    part = PART[item.kind]
    return bool(getattr(item.cursor, part) > getattr(cursor, part))


def covers(base: Cursor, cursor: Cursor) -> bool:
    """Whether a reader that went on from `base` has read everything `cursor` lacks."""
    return all(getattr(base, part) <= getattr(cursor, part) for part in PART.values())


@dataclass
class Channel:
    """One job's reader and what it has read: items[i] is the feed's (first + i)-th item
    since the reader started; `base` is the cursor before items[0]."""

    job_id: uuid.UUID
    base: Cursor
    head: Cursor
    items: list[Item] = field(default_factory=list)
    first: int = 0
    size: int = 0  # bytes of the buffered items' JSON
    status: str = "queued"
    progress: dict[str, Any] | None = None
    final: bool = False
    gone: bool = False  # the job was deleted
    error: str | None = None
    streams: int = 0
    idle_since: float = 0.0
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def end(self) -> int:
        return self.first + len(self.items)


class FeedHub:
    """The API process's readers, one per job that has open streams."""

    def __init__(self, sessions: Callable[[], Session], poll_seconds: float) -> None:
        self.sessions, self.poll = sessions, poll_seconds
        self.channels: dict[uuid.UUID, Channel] = {}
        self.lock = threading.Lock()

    def join(self, job_id: uuid.UUID, cursor: Cursor) -> Channel:
        """The job's channel (started at `cursor` if it had none); call leave() after."""
        with self.lock:
            channel = self.channels.get(job_id)
            if channel is None:
                channel = Channel(job_id=job_id, base=cursor, head=cursor)
                self.channels[job_id] = channel
                threading.Thread(
                    target=self._read, args=(channel,), name=f"feed-{job_id}", daemon=True
                ).start()
            channel.streams += 1
            return channel

    def leave(self, channel: Channel) -> None:
        with self.lock:
            channel.streams -= 1
            if channel.streams == 0:
                channel.idle_since = time.monotonic()

    def open(self) -> int:
        """Streams of this process that are following a job now."""
        with self.lock:
            return sum(c.streams for c in self.channels.values())

    def _read(self, channel: Channel) -> None:
        try:
            while not self._retire(channel):
                read = self._read_once(channel)
                if read is None or read.final:
                    return
                if not read.items:
                    time.sleep(self.poll)
        except Exception as exc:  # the database is away: the streams end, clients reconnect
            with channel.changed:
                channel.error = f"{type(exc).__name__}: {exc}"
                channel.changed.notify_all()
            self._forget(channel)

    def _read_once(self, channel: Channel) -> Read | None:
        with self.sessions() as session:
            read = read_feed(session, channel.job_id, channel.head)
        with channel.changed:
            if read is None:
                channel.gone = True
            elif not read.items and not read.final and read.progress == channel.progress:
                return read  # nothing new: the streams sleep on
            else:
                channel.items += read.items
                channel.size += sum(len(item.text) for item in read.items)
                if read.items:
                    channel.head = read.items[-1].cursor
                _trim(channel)
                channel.status, channel.progress = read.status, read.progress
                channel.final = read.final
            channel.changed.notify_all()
        if read is None or read.final:
            self._drop_later(channel)
        return read

    def _retire(self, channel: Channel) -> bool:
        """Stop reading a job nobody watched for LINGER_SECONDS."""
        with self.lock:  # one lock with join(): a stream never joins a retired channel
            idle = channel.streams == 0 and time.monotonic() - channel.idle_since > LINGER_SECONDS
            if idle and self.channels.get(channel.job_id) is channel:
                del self.channels[channel.job_id]
        return idle

    def _drop_later(self, channel: Channel) -> None:
        """An ended job's channel stays for streams that are still taking its last items;
        the next stream of the job starts a new one (which ends at once)."""
        self._forget(channel)

    def _forget(self, channel: Channel) -> None:
        with self.lock:
            if self.channels.get(channel.job_id) is channel:
                del self.channels[channel.job_id]


def _trim(channel: Channel) -> None:
    """Keep the buffer within MAX_BUFFERED items and MAX_BUFFERED_BYTES (under its lock)."""
    drop = 0
    size = channel.size
    while drop < len(channel.items) and (
        len(channel.items) - drop > MAX_BUFFERED or size > MAX_BUFFERED_BYTES
    ):
        size -= len(channel.items[drop].text)
        drop += 1
    if drop:
        channel.base = channel.items[drop - 1].cursor
        del channel.items[:drop]
        channel.first += drop
        channel.size = size
