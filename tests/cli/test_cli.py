"""The `trainyard` command: tokens, submit, watch, and the embedded single-machine demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from shared.config import get_settings
from shared.db import session_scope
from shared.tokens import find_token
from tests.live import LiveService
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cli" / "examples" / "my_model_regression.json"


@pytest.fixture()
def pg_env(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path))
    get_settings.cache_clear()


def test_token_create_prints_only_the_token(pg_env: None, sessions: sessionmaker[Session]) -> None:
    result = CliRunner().invoke(main, ["token", "create", "ci-bot", "--owner", "ci"])
    assert result.exit_code == 0, result.output
    plaintext = result.stdout.strip()
    assert "\n" not in plaintext and plaintext.startswith("ty_")
    with session_scope(sessions) as session:
        row = find_token(session=session, plaintext=plaintext)
        assert row is not None and row.owner == "ci" and row.token_hash != plaintext
    get_settings.cache_clear()


def test_submit_and_watch_against_live_api(live: LiveService, tmp_path: Path) -> None:
    token = live.headers["Authorization"].split()[1]
    env = {"TRAINYARD_URL": live.base_url, "TRAINYARD_TOKEN": token}
    runner = CliRunner(env=env)
    result = runner.invoke(main, ["submit", str(EXAMPLE), "--priority", "7"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    shown = requests.get(f"{live.base_url}/api/v1/jobs/{job_id}", headers=live.headers, timeout=30)
    assert shown.json()["priority"] == 7
    watched = runner.invoke(main, ["watch", job_id])
    assert watched.exit_code == 0, watched.output
    assert f"job {job_id}: succeeded" in watched.output
    assert "gradient norms at step" in watched.output and "fc1.weight" in watched.output
    # Followed on the live stream: the job's events and its log lines come as they happen.
    assert "queued: " in watched.output and "info: epoch 1 (step " in watched.output

    # A spec the contract's model refuses is named before anything is sent...
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"preset": "resnet"}, "data": {"dataset": "digits"}}')
    result = runner.invoke(main, ["submit", str(bad)])
    assert result.exit_code == 1
    assert "invalid" in result.output and "spec.model.preset" in result.output
    # ... and one only the API's dry run can refuse comes back as its 400.
    lenet_28 = {"model": {"preset": "lenet"}, "data": {"dataset": "digits", "image_size": 28}}
    bad.write_text(json.dumps(lenet_28))
    result = runner.invoke(main, ["submit", str(bad)])
    assert result.exit_code == 1
    assert "HTTP 400 invalid_spec" in result.output and "fc1" in result.output


@pytest.mark.e2e
def test_embedded_demo_runs_without_servers(tmp_path: Path) -> None:
    """The README's first command: SQLite + filesystem broker, demo job, exit when done."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_HOME"] = str(tmp_path / "home")
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        "--demo",
        "--exit-after-demo",
        "--port",
        str(free_port()),
        "--api-workers",
        "1",
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert ": succeeded" in out and "val_accuracy" in out and "gradient norms at step" in out
    # The trained model answers over the filesystem broker too (the API polls the row).
    predictions = [line for line in out.splitlines() if "predicted class" in line]
    assert [line.split(":")[0].strip() for line in predictions] == ["digit 0", "digit 1", "digit 2"]
    assert (tmp_path / "home" / "trainyard.db").exists()
    assert (tmp_path / "home" / "token").stat().st_mode & 0o077 == 0


@pytest.mark.e2e
def test_serve_stops_its_children_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_HOME"] = str(tmp_path)
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--api-workers", "1"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving"):
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    with socket.socket() as sock:  # gunicorn is gone: the port is free again
        sock.bind(("127.0.0.1", port))
    # The worker (named after serve's pid) is gone too.
    tag = f"trainyard-{proc.pid}@".encode()
    alive = [p for p in Path("/proc").glob("[0-9]*/cmdline") if tag in _read(p)]
    assert alive == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""


def test_token_lifecycle_from_the_cli(pg_env: None, sessions: sessionmaker[Session]) -> None:
    """create with a lifetime and scopes, list (no secrets), rotate (the old one stops
    working, the new one keeps name, owner, scopes and lifetime), revoke."""
    runner = CliRunner()
    made = runner.invoke(
        main, ["token", "create", "reader", "--owner", "dana", "--expires", "30d",
               "--scope", "read"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    first = made.stdout.strip()
    listed = runner.invoke(main, ["token", "list", "--owner", "dana"])
    assert listed.exit_code == 0 and first not in listed.output
    assert "reader\tdana\tread\tlive\texpires " in listed.output
    rotated = runner.invoke(main, ["token", "rotate", first[:10]])
    assert rotated.exit_code == 0, rotated.output
    second = rotated.stdout.strip()
    with session_scope(sessions) as session:
        assert find_token(session=session, plaintext=first) is None
        row = find_token(session=session, plaintext=second)
        assert row is not None and (row.name, row.owner, row.scopes) == ("reader", "dana", "read")
        assert row.expires_at is not None and row.created_at is not None
        assert 29.9 < (row.expires_at - row.created_at).total_seconds() / 86400 < 30.1
    assert runner.invoke(main, ["token", "revoke", second[:10]]).exit_code == 0
    with session_scope(sessions) as session:
        assert find_token(session=session, plaintext=second) is None
    bad = runner.invoke(main, ["token", "create", "x", "--expires", "soon"])
    assert bad.exit_code != 0 and "not a duration" in bad.output
    get_settings.cache_clear()
