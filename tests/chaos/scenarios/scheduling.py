"""Scheduling on a real worker: another owner's first job does not wait behind one
owner's backlog."""

from __future__ import annotations

import time
import uuid

from tests.chaos.cluster import FINAL, Cluster
from tests.chaos.scenarios.common import SPEC, TINY, Outcome, running_at_least

# -- 9. Fair share between owners ---------------------------------------------------------


def fair_share(cluster: Cluster, *, backlog: int = 20, late: int = 2) -> Outcome:
    """Owner A queues `backlog` jobs (the first one long, so the rest wait), then owner B
    queues `late`; one worker. B's first job must start after at most one more of A's."""
    out = Outcome(
        f"owner A queues {backlog} jobs, then owner B queues {late} (one worker)",
        "B's first job starts after at most one of A's",
    )
    cluster.reset()
    cluster.ensure_workers(1)
    other = cluster.new_token(f"chaos-b-{uuid.uuid4().hex[:6]}")
    a_ids = [cluster.submit_ok(SPEC)] + [cluster.submit_ok(TINY) for _ in range(backlog - 1)]
    cluster.wait_job(a_ids[0], running_at_least(1), "A's first job to run")
    b_ids = [cluster.submit_ok(TINY, token=other) for _ in range(late)]
    deadline = time.monotonic() + 300
    ids = [uuid.UUID(i) for i in a_ids + b_ids]
    while time.monotonic() < deadline:
        done = cluster.sql("SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = ANY(%s)",
                           ids, list(FINAL))[0][0]  # fmt: skip
        if done == len(ids):
            break
        time.sleep(0.3)
    rows = cluster.sql(
        "SELECT id, status, started_at, created_at FROM jobs WHERE id = ANY(%s) "
        "ORDER BY started_at",
        ids,
    )
    started = {str(r[0]): r[2] for r in rows}
    out.check(all(r[1] == "succeeded" for r in rows), f"statuses {[r[1] for r in rows]}")
    b_submitted = min(r[3] for r in rows if str(r[0]) in b_ids)
    b_first = min(started[i] for i in b_ids)
    a_between = sum(1 for i in a_ids if b_submitted < started[i] < b_first)
    order = "".join("B" if str(r[0]) in b_ids else "A" for r in rows)
    out.check(a_between <= 1, f"{a_between} of A's jobs started before B's first ({order})")
    out.measured = (
        f"after B queued, {a_between} of A's jobs started before B's first; start order "
        f"{order}; all {len(rows)} succeeded: {all(r[1] == 'succeeded' for r in rows)}"
    )
    out.figures.update({"a_between": a_between, "order": order})
    cluster.reset()
    return out
