"""Faults of the API and the database: gunicorn SIGKILLed mid-burst, PostgreSQL stopped
mid-training, and a full disk under the embedded SQLite default."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.chaos.cluster import FINAL, TIMINGS, Cluster, NotReady, wait_for
from tests.chaos.scenarios.common import (
    SPEC,
    STEPS,
    TINY,
    Outcome,
    check_rows_and_result,
    identical,
    reference,
    running_at_least,
)

# -- 6. gunicorn SIGKILLed during a burst of submissions ---------------------------------


@dataclass
class _Burst:
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (code, id)
    tries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def api_kill(
    cluster: Cluster, *, jobs: int = 200, threads: int = 10, kill_after: int = 60
) -> Outcome:
    """SIGKILL gunicorn (master and workers) while clients submit with Idempotency-Key
    and retry until answered; restart it: every key makes exactly one job, all finish."""
    out = Outcome(
        f"gunicorn SIGKILLed during a burst of {jobs} submissions ({threads} client threads, "
        "Idempotency-Key, retry until answered)",
        "every job reaches a final state; jobs == distinct keys (no duplicate job)",
    )
    cluster.reset()
    cluster.ensure_workers(1)
    burst = _Burst()
    keys = [f"chaos-{uuid.uuid4()}" for _ in range(jobs)]

    def client(mine: list[str]) -> None:
        with requests.Session() as http:
            for key in mine:
                resp, tries = cluster.submit_until_answered(TINY, key=key, session=http)
                body = resp.json() if resp.status_code == 202 else {}
                with burst.lock:
                    burst.answers[key] = (resp.status_code, str(body.get("id", "")))
                    burst.tries += tries

    started = time.monotonic()
    pool = [threading.Thread(target=client, args=(keys[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    wait_for(
        f"{kill_after} answered submissions", lambda: len(burst.answers) >= kill_after, 120, 0.01
    )
    cluster.kill_api()
    killed = time.monotonic()
    answered_at_kill = len(burst.answers)
    out.check(answered_at_kill < jobs, "every submission was answered before the kill")
    cluster.start_api(wait=False)
    cluster.wait_api_ready()
    down_s = time.monotonic() - killed
    for t in pool:
        t.join(300)
    answered_s = time.monotonic() - started
    codes = Counter(code for code, _ in burst.answers.values())
    out.check(codes == Counter({202: jobs}), f"answers {dict(codes)}")
    rows = cluster.sql(
        "SELECT idempotency_key, id::text, status FROM jobs WHERE idempotency_key = ANY(%s)", keys
    )
    by_key = Counter(k for k, _, _ in rows)
    out.check(
        len(rows) == len(by_key) == jobs, f"{len(rows)} jobs for {len(by_key)} of {jobs} keys"
    )
    wrong = [k for k, i, _ in rows if burst.answers.get(k, (0, ""))[1] != i]
    out.check(not wrong, f"{len(wrong)} keys answered with another job than the stored one")
    deadline = time.monotonic() + 240
    final: Counter[str] = Counter()
    while time.monotonic() < deadline:
        final = Counter(
            s
            for (s,) in cluster.sql("SELECT status FROM jobs WHERE idempotency_key = ANY(%s)", keys)
        )
        if sum(final[s] for s in FINAL) == len(rows):
            break
        time.sleep(0.5)
    all_final_s = time.monotonic() - started
    out.check(final["succeeded"] == jobs, f"statuses {dict(final)}")
    resent = cluster.sql(
        "SELECT count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id "
        "WHERE e.kind = 'resent' AND j.idempotency_key = ANY(%s)",
        keys,
    )[0][0]
    out.measured = (
        f"killed after {answered_at_kill} answers; API back in {down_s:.1f} s; {jobs} keys -> "
        f"{len(rows)} jobs ({len(by_key)} distinct keys); {burst.tries} POSTs in all; "
        f"{final['succeeded']}/{jobs} succeeded, all final {all_final_s:.1f} s after the "
        f"burst began (answered in {answered_s:.1f} s); re-sent by the sweeper {resent}"
    )
    out.figures.update({"down_s": down_s, "tries": burst.tries, "resent": resent})
    cluster.reset()
    return out


# -- 7. PostgreSQL stopped mid-training ---------------------------------------------------


def _poll_api_during(
    cluster: Cluster, job_id: str, stop: threading.Event, codes: Counter[str], readyz: list[str]
) -> None:
    """GET the job, POST a job, GET /readyz in a loop; count answers as 'GET 503' etc."""
    base, headers = cluster.base_url, cluster.headers()
    with requests.Session() as http:

        def get_job() -> requests.Response:
            return http.get(f"{base}/api/v1/jobs/{job_id}", headers=headers, timeout=15)

        def post_job() -> requests.Response:
            return cluster.submit(TINY, key=f"outage-{uuid.uuid4()}", session=http, timeout=15)

        def get_readyz() -> requests.Response:
            return http.get(f"{base}/readyz", timeout=15)

        calls: list[tuple[str, Callable[[], requests.Response]]] = [
            ("GET", get_job),
            ("POST", post_job),
            ("readyz", get_readyz),
        ]
        while not stop.is_set():
            for name, call in calls:
                try:
                    resp = call()
                    codes[f"{name} {resp.status_code}"] += 1
                    if name == "readyz" and resp.status_code != 200:
                        readyz.append(resp.text)
                except requests.RequestException as exc:
                    codes[f"{name} {type(exc).__name__}"] += 1
            time.sleep(0.2)


def _names_the_database(readyz_body: str) -> bool:
    """Whether a /readyz answer says the database is what is not ready."""
    try:
        checks = json.loads(readyz_body).get("checks", {})
    except ValueError:
        return False
    return bool(checks.get("database")) and checks["database"] != "ok"


def postgres_outage(cluster: Cluster, *, outage_s: float = 20.0) -> Outcome:
    """pg_ctl stop -m immediate for `outage_s` mid-training, then start it again: the job
    goes on in the same attempt, nothing is lost, the API answers 503 (never 500)."""
    out = Outcome(
        f"PostgreSQL stopped (-m immediate) for {outage_s:.0f} s mid-training",
        "job continues in the same attempt (attempt 1), 0 rows lost; API answers 503, never "
        "500; /readyz names the database",
    )
    cluster.reset()
    cluster.ensure_workers(1)
    ref = reference(cluster)
    job_id = cluster.submit_ok(SPEC)
    row = cluster.wait_job(job_id, running_at_least(8), "to pass step 8")
    out.check(row["status"] == "running", "the job ended before the outage")
    cluster.stop_postgres("immediate")
    stopped = time.monotonic()
    codes: Counter[str] = Counter()
    readyz: list[str] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_api_during, args=(cluster, job_id, stop, codes, readyz))
    poller.start()
    time.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))  # the outage itself
    stop.set()
    poller.join(60)
    during = Counter(codes)
    cluster.start_postgres()
    restarted = time.monotonic()
    api_back: float | None = None
    try:
        wait_for(
            "the API to answer 200 again",
            lambda: cluster.get(f"/api/v1/jobs/{job_id}").status_code == 200,
            120,
            0.2,
        )
        api_back = time.monotonic() - restarted
    except NotReady as exc:
        out.problems.append(str(exc))
    final = cluster.wait_final(job_id, timeout=240)
    ended_after = time.monotonic() - restarted
    server_errors = {
        k: n for k, n in during.items() if k.split()[1].startswith("5") and k.split()[1] != "503"
    }
    not_503 = {
        k: n for k, n in during.items() if not k.startswith("readyz") and not k.endswith(" 503")
    }
    out.check(not server_errors, f"5xx other than 503 during the outage: {server_errors}")
    out.check(not not_503, f"answers other than 503 during the outage: {not_503}")
    out.check(
        bool(readyz) and all(_names_the_database(body) for body in readyz),
        f"/readyz during the outage: {readyz[:1]}",
    )
    out.check(final["status"] == "succeeded", f"job {final['status']}: {final['error']}")
    out.check(final["attempt"] == 1, f"attempt {final['attempt']} (expected 1: same attempt)")
    if final["status"] == "succeeded":
        check_rows_and_result(out, cluster, job_id, ref)
    out.measured = (
        f"job {final['status']} {ended_after:.1f} s after PostgreSQL was back (stopped "
        f"past step {row['step']} of {STEPS}), attempt {final['attempt']}"
        f"{', error: ' + str(final['error']) if final['error'] else ''}; missing rows "
        f"{out.figures.get('missing_rows', 'n/a')}, identical to the reference: "
        f"{identical(out)}; answers during the "
        f"outage {dict(sorted(during.items()))}; API 200 again "
        f"{'n/a' if api_back is None else f'{api_back:.1f} s'} after the restart"
    )
    out.figures.update({"codes": dict(during), "api_back_s": api_back})
    cluster.reset()
    return out


# -- 8. Disk full under TRAINYARD_HOME (the embedded SQLite default) ----------------------


def _fill(folder: Path, leave_bytes: int) -> Path:
    """Grow a filler file in `folder` until about `leave_bytes` stay free there."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with filler.open("ab") as out, contextlib.suppress(OSError):  # ENOSPC: full, as wanted
        chunk = b"\0" * 2**20
        while free > leave_bytes:
            part = chunk[: min(len(chunk), free - leave_bytes)]
            out.write(part)
            out.flush()
            free = shutil.disk_usage(folder).free
    return filler


def disk_full(*, home_mb: int = 48) -> Outcome:
    """SQLite in TRAINYARD_HOME on a small tmpfs: fill it while a job trains. The job
    fails at once saying the disk is full; a submission then answers 507 (or 503)."""
    out = Outcome(
        "disk full under TRAINYARD_HOME (SQLite default, a tmpfs filled up)",
        "the job fails at once with 'disk full' in its error; the API answers 503/507",
    )
    # /readyz wants TRAINYARD_MIN_FREE_DISK_MB free: a few MB on this small disk.
    overrides = {"TRAINYARD_MIN_FREE_DISK_MB": "4"}
    with Cluster(database="sqlite", home_tmpfs_mb=home_mb, env_overrides=overrides) as cluster:
        cluster.ensure_workers(1)
        # Room for rows and the job's updates, not for its first checkpoint (weights and
        # Adam's moments of a 670k-parameter MLP: about 8 MB).
        filler = _fill(cluster.home, 3 * 2**20)
        job_id = cluster.submit_ok(SPEC)
        claimed = cluster.wait_job(job_id, lambda r: r["status"] != "queued", "to be claimed")
        started = time.monotonic()
        final = cluster.wait_final(job_id, timeout=120)
        took = time.monotonic() - started
        error = str(final["error"] or "")
        out.check(final["status"] == "failed", f"job {final['status']} on a full disk")
        out.check("disk full" in error, f"error {error!r} does not say 'disk full'")
        outage = float(TIMINGS["TRAINYARD_DB_OUTAGE_SECONDS"])
        out.check_time(took < outage / 2, f"failed {took:.1f} s after its claim: not at once")
        cluster.ensure_workers(0)  # the API alone on the full disk from here
        _fill(cluster.home, 0)  # now nothing is left at all
        # SQLite reuses the room its WAL file already has, so the first submissions may
        # still fit: submit until one does not, then a few more.
        codes: Counter[int] = Counter()
        refused_after: int | None = None
        for n in range(1, 1001):
            code = cluster.submit(TINY, key=f"full-{uuid.uuid4()}").status_code
            codes[code] += 1
            if code != 202 and refused_after is None:
                refused_after = n - 1
            if refused_after is not None and n >= refused_after + 5:
                break
        out.check(refused_after is not None, f"the API stored everything on a full disk: {codes}")
        out.check(set(codes) <= {202, 503, 507}, f"answers on a full disk: {dict(codes)}")
        ready = cluster.get("/readyz")
        disk_check = str(ready.json().get("checks", {}).get("disk", "")) if ready.text else ""
        out.check(
            ready.status_code == 503 and "full" in disk_check,
            f"/readyz on a full disk: {ready.status_code} {ready.text[:200]}",
        )
        filler.unlink()
        after = cluster.submit(TINY).status_code
        out.check(after == 202, f"answer {after} once space was freed (expected 202)")
        out.measured = (
            f"job {final['status']} {took:.1f} s after its claim (step {final['step']}, "
            f"claimed at step {claimed['step']}): {error!r}; POST /jobs on the full disk: "
            f"{dict(codes)} (refused after {refused_after} more fitted in SQLite's WAL); "
            f"/readyz {ready.status_code} ({disk_check or 'no disk check'}); "
            f"after freeing space: {after}"
        )
        out.report = cluster.failure_report() if out.problems else ""
    return out
