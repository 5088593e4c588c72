"""The image's build: its dependency layer depends on the lock file alone, the lock pins
everything pyproject.toml asks for, and nothing private goes into the build context."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "cluster.lock"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def test_the_dependency_layer_depends_on_the_lock_file_only() -> None:
    steps = instructions()
    install = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "-r " in args)
    assert "--no-deps" in steps[install][1]  # the lock is complete: pip resolves nothing
    copied = [args for op, args in steps[:install] if op in ("COPY", "ADD")]
    assert copied == ["requirements/cluster.lock /tmp/cluster.lock"], copied
    # The code comes after, and nothing reinstalls dependencies from pyproject.toml.
    later = [args for op, args in steps[install + 1 :] if op == "RUN"]
    assert all("--no-deps" in args for args in later if "pip install" in args), later


def test_the_image_runs_as_a_fixed_non_root_user_under_tini() -> None:
    steps = dict(reversed(instructions()))  # the first of each instruction
    user = [args for op, args in instructions() if op == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), user
    assert "tini" in steps["ENTRYPOINT"]


def test_the_lock_pins_every_dependency_pyproject_asks_for() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["cluster"]]
    pins = locked()
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert pins["torch"] == "2.14.1"


def test_the_build_context_leaves_out_history_state_and_secrets() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything out, then what the Dockerfile copies back in
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    for private in (".git", ".venv", ".trainyard", ".env", "tests", "bench"):
        assert not any(private == a or private.startswith(a + "/") for a in allowed), private
    copied = {
        source.rstrip("/")
        for op, args in instructions()
        if op == "COPY"
        for source in args.split()[:-1]  # every source; the last word is the destination
        if not source.startswith("--")
    }
    assert copied <= set(allowed), copied - set(allowed)
