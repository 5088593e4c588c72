"""Schemathesis against the live API: real gunicorn, a real worker, real PostgreSQL and
Redis. Every operation of /api/v1/openapi.json, positive and negative data, and the
stateful links from a submitted job to its results; 0 failures of the four checks.

The seed is fixed (TRAINYARD_CONTRACT_SEED picks another; TRAINYARD_CONTRACT_EXAMPLES
the cases per operation), so a failure here reproduces; other seeds are run by hand
(README: "The API contract").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cli.migrate import upgrade
from cli.serve import api_command, stop_children, wait_healthy, worker_command
from shared.db import make_engine, make_session_factory
from shared.queues import ALL_TRAIN_QUEUES, QUEUE_INFER
from tests.support.processes import die_with_parent, free_port
from tests.support.servers import create_database, drop_database, make_token

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
)
REDIS = os.environ.get("TRAINYARD_TEST_REDIS_CONTRACT", "redis://127.0.0.1:6379/13")
SEED = os.environ.get("TRAINYARD_CONTRACT_SEED", "20261202")
EXAMPLES = os.environ.get("TRAINYARD_CONTRACT_EXAMPLES", "25")


@pytest.fixture(scope="module")
def contract_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """gunicorn (answers checked against their models) and a worker on a database of
    their own; yields the base URL and a token with scopes read and submit."""
    name = f"trainyard_contract_{os.getpid()}"
    url = create_database(name)
    upgrade(url, "head")
    engine = make_engine(url)
    token = make_token(make_session_factory(engine), "contract")
    engine.dispose()
    redis.Redis.from_url(REDIS).flushdb()
    logs = tmp_path_factory.mktemp("contract")
    port = free_port()
    env = {
        **os.environ,
        "TRAINYARD_DATABASE_URL": url,
        "TRAINYARD_BROKER_URL": REDIS,
        "TRAINYARD_HOME": str(logs),
        "TRAINYARD_RATE_LIMIT": "",  # the fuzzer is one token firing as fast as it can
        "TRAINYARD_CHECK_RESPONSES": "1",
        "TRAINYARD_PREDICT_WAIT_SECONDS": "2",
        # A stream of a job that stays queued lasts this long, well inside the fuzzer's
        # request timeout; enough open at once for its two workers.
        "TRAINYARD_STREAM_MAX_SECONDS": "3",
        "TRAINYARD_STREAM_MAX_OPEN": "4",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    procs = []
    for proc_name, cmd in (
        ("worker", worker_command([*ALL_TRAIN_QUEUES, QUEUE_INFER])),
        ("api", api_command("127.0.0.1", port, 2)),
    ):
        out = (logs / f"{proc_name}.log").open("w")
        child = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # nothing outlives the test run
        )  # fmt: skip
        procs.append(child)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, timeout=180)  # gunicorn + torch on a loaded 2-core machine
        yield base, token
    finally:
        stop_children(procs, timeout=30)
        drop_database(name)


def test_the_live_api_keeps_its_openapi_contract(
    contract_api: tuple[str, str], tmp_path: Path
) -> None:
    base, token = contract_api
    cmd = [
        sys.executable, str(Path(__file__).with_name("run_schemathesis.py")), "run",
        f"{base}/api/v1/openapi.json",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--mode", "all",  # positive and negative data
        "--max-examples", EXAMPLES,
        "--seed", SEED,
        "--workers", "2",
        "--request-timeout", "60",
        "--header", f"Authorization: Bearer {token}",
        "--report", "junit", "--report-dir", str(tmp_path),
        "--no-color",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    out = run.stdout + run.stderr
    cases = re.search(r"(\d+) generated", out)
    print(f"schemathesis (seed {SEED}): {cases.group(0) if cases else 'no count'}")
    print(out[-3000:])
    assert run.returncode == 0, out[-12000:]
    assert cases is not None and int(cases.group(1)) > 1000, "too few cases ran"
    phases = out[out.index("Test Phases:") :].split("\n\n")[0]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", phases), f"{phase} did not pass:\n{phases}"
