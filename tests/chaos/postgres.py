"""A throwaway PostgreSQL cluster: initdb in a temp folder, pg_ctl on a free port.

initdb refuses to run as root; as root, every command runs as the `postgres` user
(runuser, else su), which then owns the data folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from tests.chaos.procs import READY_TIMEOUT, wait_for

PG_BIN = Path(os.environ.get("TRAINYARD_CHAOS_PG_BIN", "/usr/local/bin"))


class Postgres:
    """One server on 127.0.0.1:`port`, data and socket under `folder`, trust auth."""

    def __init__(self, folder: Path, port: int, database: str = "trainyard") -> None:
        self.folder, self.port, self.database = folder, port, database
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/{database}"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        self.log = folder / "postgres.log"
        self.started = False  # even a failed start may leave a server to stop

    def _as_postgres_user(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--", *cmd]
        return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]

    def _run(self, cmd: list[str], what: str, timeout: float = READY_TIMEOUT) -> None:
        out = subprocess.run(
            self._as_postgres_user(cmd),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")

    def init(self) -> None:
        """initdb into folder/data (owned by the postgres user when we are root)."""
        self.folder.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.folder.chmod(0o700)
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.folder / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            "initdb",
        )

    def start(self) -> None:
        """pg_ctl start; returns once it accepts connections and the database exists."""
        # fsync off: a throwaway cluster; an immediate stop is not a power cut, so the
        # page cache keeps every committed row anyway.
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self.started = True
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(READY_TIMEOUT)),
                "start",
            ],
            "pg_ctl start",
            timeout=READY_TIMEOUT + 30,
        )
        wait_for(f"PostgreSQL on port {self.port} (pg_isready)", self.up)
        admin = self.dsn.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop (-m immediate: like a crash, no shutdown checkpoint)."""
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", mode, "-w", "stop"]
        subprocess.run(
            self._as_postgres_user(cmd), capture_output=True, check=False, timeout=READY_TIMEOUT
        )

    def up(self) -> bool:
        """pg_isready says it accepts connections."""
        out = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
            capture_output=True,
            check=False,
        )
        return out.returncode == 0

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit); the rows, if any."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(query, params or None)
            return list(cur.fetchall()) if cur.description else []
