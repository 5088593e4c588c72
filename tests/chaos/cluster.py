"""A throwaway Trainyard cluster of real processes, for fault tests and the chaos bench.

Everything runs on servers this module starts itself: a PostgreSQL cluster made with
`initdb` and run by `pg_ctl` on a free port, a `redis-server` on a free port without
persistence, gunicorn with the API, `trainyard worker` and `trainyard sweeper --every 2`.
The shared servers on 5432 / 6379 are never touched: every TRAINYARD_* variable of the
caller is dropped from the children's environment and replaced with this cluster's.

Each piece can be started, stopped and killed on its own, which is the point: the
scenarios in tests/chaos/scenarios.py kill them mid-work and check what must hold.
Readiness is always waited for (pg_isready, PING, GET /readyz, the worker's "ready"
line) with generous bounds, and a timeout names what it was waiting for.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from tests.chaos.postgres import Postgres
from tests.chaos.procs import READY_TIMEOUT, CannotMount, NotReady, Proc, spawn, wait_for
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
TRAINYARD = str(Path(sys.executable).parent / "trainyard")
QUEUES = ("train", "train.cpu", "train.gpu", "infer")
FINAL = ("succeeded", "failed", "cancelled")

# Short timings so a lost worker is noticed in seconds, not minutes.
TIMINGS: dict[str, str] = {
    "TRAINYARD_LEASE_SECONDS": "10",
    "TRAINYARD_HEARTBEAT_SECONDS": "1",
    "TRAINYARD_RESEND_GRACE_SECONDS": "3",
    "TRAINYARD_FLUSH_SECONDS": "0.5",
    "TRAINYARD_SHUTDOWN_GRACE_SECONDS": "30",
    "TRAINYARD_DB_OUTAGE_SECONDS": "60",
    # Faults are under test here, not quotas: a burst of 200 and a backlog of 300 jobs
    # from one token must not be refused with 429.
    "TRAINYARD_RATE_LIMIT": "",
    "TRAINYARD_QUOTA_MAX_QUEUED": "0",
    # Jobs over several nodes: every worker is on this host; a gang that cannot fill
    # gives its worker back after 8 s.
    "TRAINYARD_NODE_ADDRESS": "127.0.0.1",
    "TRAINYARD_RENDEZVOUS_TIMEOUT": "8",
}
SWEEP_EVERY = 2.0

__all__ = ["FINAL", "READY_TIMEOUT", "TIMINGS", "CannotMount", "Cluster", "NotReady", "wait_for"]


@dataclass
class Cluster:
    """PostgreSQL, Redis, the API, the sweeper and any number of workers, all throwaway.

    `with Cluster() as c:` starts the servers, migrates, makes a token and starts the API
    and the sweeper; workers are started by the caller (`c.start_worker()`).
    """

    api_workers: int = 2
    env_overrides: dict[str, str] = field(default_factory=dict)
    keep_files: bool = False
    # "sqlite": no PostgreSQL, the embedded default (a SQLite file in TRAINYARD_HOME).
    database: str = "postgres"
    # Mount a tmpfs of this size on TRAINYARD_HOME (root only): a disk that can fill up.
    home_tmpfs_mb: int | None = None

    def __post_init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="trainyard-chaos-"))
        # PostgreSQL runs as its own user when we are root: it must reach its folder.
        self.base.chmod(0o755)
        self.logs = self.base / "logs"
        self.logs.mkdir()
        self.home = self.base / "home"
        self.home.mkdir()
        self.redis_port, self.api_port = free_port(), free_port()
        self.postgres = Postgres(self.base / "pg", free_port())
        self.broker_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.token = ""
        self.redis_proc: Proc | None = None
        self.api: Proc | None = None
        self.sweeper: Proc | None = None
        self.workers: list[Proc] = []
        self._counter = 0
        self._mounted = False
        atexit.register(self.stop)

    # -- environment ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The children's environment: this cluster's servers, short timings, no other
        TRAINYARD_* setting (nothing may reach the shared servers)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
        if self.database == "postgres":
            base["TRAINYARD_DATABASE_URL"] = self.postgres.url
        return {
            **base,
            "TRAINYARD_BROKER_URL": self.broker_url,
            "TRAINYARD_HOME": str(self.home),
            "TRAINYARD_API_PORT": str(self.api_port),
            **TIMINGS,
            **self.env_overrides,
            # Several processes share two cores; one thread each keeps them from fighting.
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }

    def _spawn(self, name: str, cmd: list[str]) -> Proc:
        self._counter += 1
        log = self.logs / f"{self._counter:02d}-{name}.log"
        return spawn(name, cmd, log=log, env=self.env(), cwd=ROOT)

    def _run(self, cmd: list[str], what: str, timeout: float = READY_TIMEOUT) -> str:
        out = subprocess.run(
            cmd,
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed ({out.returncode}): {out.stderr[-3000:]}")
        return out.stdout

    # -- the whole ------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException as exc:
            # The logs go with the folder: keep their tails in the error.
            report = self.failure_report()
            self.stop()
            if isinstance(exc, NotReady | RuntimeError) and not isinstance(exc, CannotMount):
                raise NotReady(f"the cluster did not start: {exc}\n{report}") from exc
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Servers, schema, token, API and sweeper (no worker)."""
        if self.home_tmpfs_mb is not None:
            self.mount_home()
        if self.database == "postgres":
            self.init_postgres()
            self.start_postgres()
        self.start_redis()
        self._run([TRAINYARD, "db", "upgrade"], "trainyard db upgrade")
        self.token = self._run([TRAINYARD, "token", "create", "chaos"], "token create").strip()
        self.start_api(wait=False)
        self.start_sweeper()
        self.wait_api_ready()

    def mount_home(self) -> None:
        """A tmpfs of home_tmpfs_mb on TRAINYARD_HOME; CannotMount when not allowed."""
        if os.geteuid() != 0:
            raise CannotMount("mounting a tmpfs needs root")
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.home_tmpfs_mb}m", "tmpfs", str(self.home)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise CannotMount(f"mount -t tmpfs failed: {out.stderr.strip()}")
        self._mounted = True

    def stop(self) -> None:
        """Stop everything this cluster started (safe to call twice, or half-started)."""
        for proc in [*self.workers, self.sweeper, self.api]:
            if proc is not None:
                proc.kill()
        self.workers.clear()
        self.api = self.sweeper = None
        if self.redis_proc is not None:
            self.redis_proc.kill()
            self.redis_proc = None
        if self.postgres.started:
            with contextlib.suppress(Exception):
                self.postgres.stop()
            self.postgres.started = False
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.home)], capture_output=True, check=False)
            self._mounted = False
        if self.base.exists() and not self.keep_files:
            shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.stop)

    def reset(self) -> None:
        """Between scenarios: servers up, every unfinished job cancelled, the queues empty,
        so one scenario's leftovers never feed the next. Live workers stay (they are idle
        once their job is cancelled): starting one costs seconds of importing torch."""
        if not self.postgres_up():
            self.start_postgres()
        if self.redis_proc is None or not self.redis_proc.alive():
            self.start_redis()
        if self.api is None or not self.api.alive():
            self.start_api()
        if self.sweeper is None or not self.sweeper.alive():
            self.start_sweeper()
        self.sql(
            "UPDATE jobs SET status = 'cancelled', finished_at = now(), worker = NULL "
            "WHERE status IN ('queued', 'running')"
        )
        # The waiting and the delivered-but-unacknowledged messages; not kombu's bindings.
        with self.redis() as client:
            client.delete(*QUEUES, "unacked", "unacked_index")
        self.workers = [w for w in self.workers if w.alive()]

    def failure_report(self) -> str:
        """The tails of every log, for a failed assertion's message."""
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace")[-2500:]
            parts.append(f"--- {log.name} ---\n{text}")
        pg_log = self.postgres.log
        if pg_log.exists():
            parts.append(f"--- postgres.log ---\n{pg_log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    # -- PostgreSQL -----------------------------------------------------------------------

    def init_postgres(self) -> None:
        self.postgres.init()

    def start_postgres(self) -> None:
        """pg_ctl start on this cluster's port; returns once it accepts connections."""
        self.postgres.start()

    def stop_postgres(self, mode: str = "immediate") -> None:
        """pg_ctl stop (-m immediate: like a crash, no shutdown checkpoint)."""
        self.postgres.stop(mode)

    def postgres_up(self) -> bool:
        return self.postgres.up()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the cluster's database (autocommit); the rows, if any."""
        return self.postgres.sql(query, *params)

    # -- Redis ----------------------------------------------------------------------------

    def start_redis(self) -> None:
        """redis-server on this cluster's port, no RDB, no AOF: a restart loses everything."""
        self.redis_proc = self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base),
                "--protected-mode",
                "no",
            ],
        )

        def pong() -> bool:
            with self.redis() as client:
                return bool(client.ping())

        wait_for(f"redis-server on port {self.redis_port} (PING)", pong)

    def kill_redis(self) -> None:
        """SIGKILL redis-server: every message it held is gone."""
        assert self.redis_proc is not None
        self.redis_proc.kill()

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=5, socket_connect_timeout=2)

    def queued_messages(self) -> Counter[str]:
        """How many task messages wait in the queue lists, per job id."""
        counts: Counter[str] = Counter()
        with self.redis() as client:
            for queue in QUEUES:
                raws: list[bytes] = client.lrange(queue, 0, -1)
                for raw in raws:
                    counts[message_job_id(raw)] += 1
        return counts

    # -- API, workers, sweeper ------------------------------------------------------------

    def start_api(self, wait: bool = True) -> Proc:
        """gunicorn with the API (its own process group: kill_api takes its workers too)."""
        from cli.serve import api_command

        self.api = self._spawn("api", api_command("127.0.0.1", self.api_port, self.api_workers))
        if wait:
            self.wait_api_ready()
        return self.api

    def wait_api_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            assert self.api is not None
            if not self.api.alive():
                raise NotReady(f"gunicorn exited: {self.api.tail()}")
            resp = requests.get(f"{self.base_url}/readyz", timeout=5)
            if resp.status_code != 200:  # the reason shows if it never gets better
                raise NotReady(f"/readyz answered {resp.status_code}: {resp.text[:300]}")
            return True

        wait_for(f"the API's GET {self.base_url}/readyz to answer 200", ready, timeout, 0.2)

    def kill_api(self) -> None:
        """SIGKILL gunicorn's master and workers at once (a crashed container)."""
        assert self.api is not None
        self.api.kill()

    def start_worker(self, queues: str = "train,train.cpu", wait: bool = True) -> Proc:
        """`trainyard worker` (Celery, solo pool); waits for its "ready" line."""
        proc = self._spawn("worker", [TRAINYARD, "worker", "-Q", queues, "-l", "info"])
        self.workers.append(proc)
        if wait:
            self.wait_worker_ready(proc)
        return proc

    def wait_worker_ready(self, proc: Proc, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            if not proc.alive():
                raise NotReady(f"worker exited ({proc.popen.returncode}): {proc.tail()}")
            return proc.has_logged(" ready.")

        wait_for(f"worker pid {proc.pid} to log 'ready.' ({proc.log})", ready, timeout, 0.2)

    def ensure_workers(self, count: int) -> list[Proc]:
        """Exactly `count` live, ready workers (extra ones are stopped)."""
        self.workers = [w for w in self.workers if w.alive()]
        while len(self.workers) > count:
            self.workers.pop().kill()
        while len(self.workers) < count:
            self.start_worker(wait=False)
        for proc in self.workers:
            self.wait_worker_ready(proc)
        return list(self.workers)

    def worker_named(self, name: str | None) -> Proc | None:
        """The worker whose claim name (host:pid) is `name`."""
        pid = (name or "").rpartition(":")[2]
        return next((w for w in self.workers if str(w.pid) == pid), None)

    def start_sweeper(self) -> Proc:
        self.sweeper = self._spawn("sweep", [TRAINYARD, "sweeper", "--every", str(SWEEP_EVERY)])
        return self.sweeper

    # -- HTTP -----------------------------------------------------------------------------

    def new_token(self, owner: str) -> str:
        """A token of another owner (`trainyard token create`)."""
        return self._run([TRAINYARD, "token", "create", owner], "token create").strip()

    def headers(self, key: str | None = None, *, token: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {token or self.token}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h

    def submit(
        self,
        spec: dict[str, Any],
        *,
        key: str | None = None,
        session: requests.Session | None = None,
        timeout: float = 30,
        token: str | None = None,
    ) -> requests.Response:
        """POST /api/v1/jobs once (no retry), as the cluster's owner or `token`'s."""
        http = session or requests
        return http.post(
            f"{self.base_url}/api/v1/jobs",
            json={"kind": "train", "spec": spec},
            headers=self.headers(key, token=token),
            timeout=timeout,
        )

    def submit_ok(
        self, spec: dict[str, Any], *, key: str | None = None, token: str | None = None
    ) -> str:
        """Submit and expect 202; the job id."""
        resp = self.submit(spec, key=key, token=token)
        if resp.status_code != 202:
            raise AssertionError(f"POST /jobs: {resp.status_code} {resp.text[:500]}")
        return str(resp.json()["id"])

    def submit_until_answered(
        self,
        spec: dict[str, Any],
        *,
        key: str,
        session: requests.Session | None = None,
        deadline_s: float = READY_TIMEOUT,
    ) -> tuple[requests.Response, int]:
        """A careful client: the same Idempotency-Key until an HTTP answer that is not a
        429 or 503 comes back (connection refused / reset while the API is down are retried).
        Returns (the answer, how many tries it took)."""
        deadline = time.monotonic() + deadline_s
        tries = 0
        while True:
            tries += 1
            try:
                resp = self.submit(spec, key=key, session=session)
                if resp.status_code not in (429, 503):  # both say: try again later
                    return resp, tries
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise NotReady(f"no answer to POST /jobs with key {key} in {deadline_s:.0f} s")
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return requests.get(f"{self.base_url}{path}", headers=self.headers(), timeout=timeout)

    # -- job state, from the database (works while the API is down) ----------------------

    def job_row(self, job_id: str) -> dict[str, Any]:
        """The job's state (from the database; over HTTP when it is the SQLite file)."""
        if self.database != "postgres":
            body = self.get(f"/api/v1/jobs/{job_id}").json()
            return {
                "status": body["status"],
                "attempt": body["attempt"],
                "worker": body["worker"],
                "step": body["progress"]["step"],
                "total": body["progress"]["total_steps"],
                "summary": body["summary"],
                "error": body["error"],
            }
        rows = self.sql(
            "SELECT status, attempt, worker, progress_step, progress_total, summary, error "
            "FROM jobs WHERE id = %s",
            uuid.UUID(job_id),
        )
        if not rows:
            raise AssertionError(f"no job {job_id}")
        status, attempt, worker, step, total, summary, error = rows[0]
        return {
            "status": status,
            "attempt": attempt,
            "worker": worker,
            "step": step,
            "total": total,
            "summary": summary,
            "error": error,
        }

    def wait_job(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = READY_TIMEOUT,
        every: float = 0.1,
    ) -> dict[str, Any]:
        """Poll the job row until `until(row)`; raise naming `what` and the last row."""
        last: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            nonlocal last
            last = self.job_row(job_id)
            return last if until(last) else None

        try:
            return wait_for(f"job {job_id} {what}", probe, timeout, every)
        except NotReady as exc:
            raise NotReady(f"{exc}; last row: {_short(last)}") from None

    def wait_final(self, job_id: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        return self.wait_job(job_id, lambda r: r["status"] in FINAL, "to end", timeout, 0.2)

    def events(self, job_id: str) -> list[tuple[str, str]]:
        rows = self.sql(
            "SELECT kind, message FROM job_events WHERE job_id = %s ORDER BY id", uuid.UUID(job_id)
        )
        return [(str(k), str(m)) for k, m in rows]

    def loss_series(self, job_id: str) -> list[tuple[int, float]]:
        """train/loss as (step, value), one row per stored row (duplicates would show)."""
        rows = self.sql(
            "SELECT step, value FROM metrics WHERE job_id = %s AND split = 'train' "
            "AND name = 'loss' ORDER BY step",
            uuid.UUID(job_id),
        )
        return [(int(s), float(v)) for s, v in rows]

    def final_sha256(self, job_id: str) -> list[str]:
        rows = self.sql(
            "SELECT sha256 FROM checkpoints WHERE job_id = %s AND tag = 'final'", uuid.UUID(job_id)
        )
        return [str(r[0]) for r in rows]


def message_job_id(raw: bytes | str) -> str:
    """The job id a Celery task message carries (its one argument); "" if not ours."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return str(json.loads(body)[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _short(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row.items() if k != "summary"}, default=str)
