"""Faults of the broker: Redis killed and restarted empty, and a backlog the sweeper
must never multiply."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.chaos.cluster import FINAL, SWEEP_EVERY, TIMINGS, Cluster
from tests.chaos.scenarios.common import (
    SPEC,
    TINY,
    Outcome,
    check_rows_and_result,
    reference,
    running_at_least,
    span,
)

# -- 3. Redis SIGKILLed and restarted, messages lost --------------------------------------


def kill_redis(cluster: Cluster, *, jobs: int = 4, workers: int = 2) -> Outcome:
    """kill -9 Redis (no AOF) while jobs run and wait, start it again: nothing is lost,
    every job runs again soon, and no queued job ever has two messages."""
    out = Outcome(
        "Redis SIGKILLed and restarted empty (no AOF) while jobs run and wait",
        "0 jobs lost (all succeed); every job running again within 30 s of Redis being back; "
        "at most one message per queued job",
    )
    cluster.reset()
    cluster.ensure_workers(workers)
    ref = reference(cluster)
    ids = [cluster.submit_ok(SPEC) for _ in range(jobs)]
    running = [
        cluster.wait_job(
            i,
            running_at_least(5),
            "to run",
            120,
        )
        for i in ids[:workers]
    ]
    out.check(all(r["status"] == "running" for r in running), "a job ended before the kill")
    cluster.kill_redis()
    cluster.start_redis()
    back = time.monotonic()
    # Running again: its step moved past where it stood when Redis came back (or it ended).
    at_back = {i: cluster.job_row(i)["step"] for i in ids}
    again: dict[str, float] = {}
    most = 0
    deadline = back + 240
    while time.monotonic() < deadline:
        most = max([most, *cluster.queued_messages().values()])
        rows = {i: cluster.job_row(i) for i in ids}
        for i, r in rows.items():
            if i not in again and (r["status"] in FINAL or r["step"] > at_back[i]):
                again[i] = time.monotonic() - back
        if all(r["status"] in FINAL for r in rows.values()):
            break
        time.sleep(0.3)
    statuses = Counter(cluster.job_row(i)["status"] for i in ids)
    out.check(statuses["succeeded"] == jobs, f"statuses {dict(statuses)}")
    late = {i: s for i, s in again.items() if s > 30}
    out.check(len(again) == jobs, f"running again: {again} (all {jobs} expected)")
    out.check_time(not late, f"running again: {again} (all {jobs} within 30 s expected)")
    out.check(most <= 1, f"a job had {most} messages in the queue at once")
    for i in ids:
        if cluster.job_row(i)["status"] == "succeeded":
            check_rows_and_result(out, cluster, i, ref)
    resent = sum(1 for i in ids for k, _ in cluster.events(i) if k == "resent")
    out.measured = (
        f"{statuses['succeeded']}/{jobs} succeeded ({jobs - workers} were queued, {workers} "
        f"running at the kill); running again after Redis came back: "
        f"{span(list(again.values()))}; most messages per job {most}; re-sent {resent}"
    )
    out.figures.update({"again_s": again, "most_messages": most, "resent": resent})
    cluster.reset()
    return out


# -- 4. A backlog across sweeps -----------------------------------------------------------


def _submit_many(cluster: Cluster, spec: dict[str, Any], count: int, threads: int) -> list[str]:
    def one(_: int) -> str:
        return cluster.submit_ok(spec)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def backlog(cluster: Cluster, *, jobs: int = 300, periods: int = 4) -> Outcome:
    """A backlog of queued jobs, no worker, while the sweeper runs: never two messages
    for one job (the sweeper looks into Redis and leaves waiting messages alone)."""
    out = Outcome(
        f"backlog of {jobs} queued jobs, no worker, over {periods} sweeper periods",
        "at most one message per job in Redis at any time",
    )
    cluster.reset()
    cluster.ensure_workers(0)
    started = time.monotonic()
    ids = set(_submit_many(cluster, TINY, jobs, 10))
    submit_s = time.monotonic() - started
    grace = float(TIMINGS["TRAINYARD_RESEND_GRACE_SECONDS"])
    # Every job past the resend grace, then `periods` sweeps on top.
    until = time.monotonic() + grace + periods * SWEEP_EVERY + 1
    samples, most, fewest_jobs, total_max = 0, 0, jobs, 0
    while time.monotonic() < until:
        counts = cluster.queued_messages()
        ours = {i: n for i, n in counts.items() if i in ids}
        samples += 1
        most = max([most, *ours.values()])
        fewest_jobs = min(fewest_jobs, len(ours))
        total_max = max(total_max, sum(counts.values()))
        time.sleep(0.5)
    out.check(most <= 1, f"a job had {most} messages at once")
    out.check(total_max <= jobs, f"{total_max} messages for {jobs} jobs")
    resent = cluster.sql(
        "SELECT count(*) FROM job_events WHERE kind = 'resent' AND job_id = ANY(%s)",
        [uuid.UUID(i) for i in ids],
    )[0][0]
    out.check(cluster.sweeper is not None and cluster.sweeper.alive(), "the sweeper died")
    out.measured = (
        f"{samples} samples over {time.monotonic() - started - submit_s:.0f} s: most messages "
        f"per job {most}, most messages in all {total_max} (jobs with a message: at least "
        f"{fewest_jobs}/{jobs}); re-sent {resent}; {jobs} submissions took {submit_s:.1f} s"
    )
    out.figures.update({"most": most, "total_max": total_max, "resent": resent})
    cluster.reset()
    return out
