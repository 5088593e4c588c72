"""Workers' presence records in Redis: what each live worker is and does.

Each worker writes `trainyard:worker:<name>` every heartbeat (worker/presence.py), with an
expiry of three beats, so a record outlives its worker by at most that. Rows its writers
committed are added up in `trainyard:rows:<table>` counters. The API's /metrics and the
CPU workers' hand-off of `auto` jobs to idle GPU workers read them here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

WORKER_KEY_PREFIX = "trainyard:worker:"
ROWS_KEY_PREFIX = "trainyard:rows:"
OFFER_KEY_PREFIX = "trainyard:gpu-offer:"


class WorkerRecord(BaseModel):
    """One worker's presence, as of its last beat."""

    name: str
    device: str  # "cuda" (consumes train.gpu) or "cpu"
    queues: list[str]
    busy: bool  # running a training job
    jobs: dict[str, int]  # job id -> step last reported
    steps_per_second: dict[str, float]  # job id -> steps/s over the last beat
    writer_backlog: int  # rows handed to its writers, not committed yet
    at: float  # unix time of the beat


def worker_key(name: str) -> str:
    return WORKER_KEY_PREFIX + name


def read_workers(client: Any) -> list[WorkerRecord]:
    """Every live worker's record (unreadable ones are skipped: another version's)."""
    # SCAN may return a key twice (while Redis rehashes): each worker once.
    keys = sorted(set(client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=500)))
    records = []
    for raw in client.mget(keys) if keys else ():
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            records.append(WorkerRecord.model_validate(json.loads(raw)))
        except (ValueError, ValidationError):
            continue
    return records


def reserve_idle_gpu_worker(client: Any, *, job_id: str, hold_seconds: float) -> str | None:
    """An idle GPU worker's name, reserved for `job_id` until its next beats say it is
    busy (SET NX): CPU workers handing jobs over at once never pick the same one."""
    for record in read_workers(client):
        if record.device != "cuda" or record.busy:
            continue
        key = OFFER_KEY_PREFIX + record.name
        if client.set(key, job_id, nx=True, px=max(1, round(hold_seconds * 1000))):
            return record.name
    return None


def rows_written(client: Any) -> dict[str, int]:
    """Rows committed by all workers so far, per table."""
    keys = sorted(set(client.scan_iter(match=ROWS_KEY_PREFIX + "*", count=100)))
    values = client.mget(keys) if keys else []
    return {
        (key.decode() if isinstance(key, bytes) else key)[len(ROWS_KEY_PREFIX) :]: int(value)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }


def touch_heartbeat(path: Path | None) -> None:
    """Say "alive and reaching what it needs" to the container healthcheck (no path: none)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def heartbeat_age(path: Path) -> float | None:
    """Seconds since a worker or the sweeper last touched `path`; None when none did."""
    try:
        return max(0.0, time.time() - os.stat(path).st_mtime)
    except FileNotFoundError:
        return None
