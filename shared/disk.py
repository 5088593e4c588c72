"""How much room is left where the service writes (the SQLite file, the embedded broker,
logs) — readiness fails before a full disk fails jobs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# Less than this free is "full": SQLite may still fit a few rows into its WAL file, but
# what it can store is about to run out.
FULL_BYTES = 2**20


@dataclass(frozen=True, slots=True)
class DiskRoom:
    """Free space on the filesystem holding `path`."""

    path: Path
    free_bytes: int
    total_bytes: int

    @property
    def free_mb(self) -> float:
        return self.free_bytes / 2**20

    @property
    def full(self) -> bool:
        return self.free_bytes < FULL_BYTES


def disk_room(path: Path) -> DiskRoom:
    """Free space for `path`, measured at its nearest existing folder (home may not exist
    yet before the first job)."""
    here = path.resolve()
    while not here.exists() and here != here.parent:
        here = here.parent
    usage = shutil.disk_usage(here)  # OSError when even that cannot be read
    return DiskRoom(path=path, free_bytes=usage.free, total_bytes=usage.total)
