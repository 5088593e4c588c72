"""Operator-provided modules: entry points in the `trainyard.modules` group, by name only."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from shared.errors import SpecError
from shared.net.build import build_model
from shared.net.dryrun import checked_model, dry_run
from shared.net.layers import LAYERS, operator_modules
from shared.net.summary import model_summary
from shared.spec import JobSpec

FIXTURE = Path(__file__).parents[2] / "fixtures" / "opmodules" / "acme_ops.py"
MODULE = "trainyard_test_acme_ops"  # the name the copy is installed under
ENTRY_POINTS = f"""\
[trainyard.modules]
GatedLinear = {MODULE}:GatedLinear
NotAModule = {MODULE}:NotAModule
make_layer = {MODULE}:make_layer
Missing = trainyard_test_no_such_module:Thing
Linear = {MODULE}:GatedLinear
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Install the fixture module the way pip would: a module file plus a dist-info."""
    shutil.copy(FIXTURE, tmp_path / f"{MODULE}.py")
    info = tmp_path / "acme_ops-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ops\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield operator_modules(reload=True)
    finally:
        monkeypatch.undo()
        sys.modules.pop(MODULE, None)
        operator_modules(reload=True)


def gated_job() -> JobSpec:
    gated = {"type": "GatedLinear", "name": "glu", "in_features": 10, "out_features": 8}
    layers = [gated, {"type": "Linear", "in_features": 8, "out_features": 3}]
    data = {"dataset": "synthetic", "input_shape": [10], "num_classes": 3}
    return JobSpec.model_validate({"model": {"layers": layers}, "data": data})


def test_operator_module_builds_and_dry_runs(installed: dict[str, Any]) -> None:
    assert set(installed) == {"GatedLinear"}
    spec = gated_job()
    report = dry_run(spec)
    assert report.layer_shapes[0] == ("glu", "GatedLinear", (2, 8))
    assert report.param_count == 2 * (10 * 8 + 8) + 8 * 3 + 3

    model = build_model(spec.model)
    assert type(model.glu).__name__ == "GatedLinear"
    assert list(model.state_dict())[:2] == ["glu.gate.weight", "glu.gate.bias"]
    assert model(torch.randn(4, 10)).shape == (4, 3)


def test_operator_module_arguments_are_checked_like_built_ins(installed: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"layers": [{"type": "GatedLinear", "in_features": 10, "out_feature": 3}]},
            "data": {"dataset": "synthetic", "input_shape": [10], "num_classes": 3},
        }
    )
    with pytest.raises(SpecError) as info:
        dry_run(spec)
    assert "(GatedLinear): unknown argument 'out_feature' (did you mean 'out_features'?)" in (
        info.value.message
    )


def test_summary_lists_the_operator_modules_children(installed: dict[str, Any]) -> None:
    # Forward order, not registration order: forward() calls value before gate.
    names = [row.name for row in model_summary(gated_job(), *checked_model(gated_job())).layers]
    assert names == ["glu", "glu.value", "glu.gate", "1"]


def test_bad_entry_points_are_skipped_with_warnings(
    installed: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Loading happened in the fixture: its warnings belong to the setup phase.
    messages = "\n".join(r.getMessage() for r in caplog.get_records("setup"))
    assert "'Missing'" in messages and "failed to load" in messages
    assert "'NotAModule'" in messages and "'make_layer'" in messages
    assert "is not an nn.Module class" in messages
    assert "'Linear'" in messages and "reuses a built-in name" in messages
    assert set(installed) == {"GatedLinear"}
    assert LAYERS["Linear"] is nn.Linear


def test_without_the_install_the_name_is_unknown() -> None:
    assert "GatedLinear" not in operator_modules()
    with pytest.raises(SpecError, match="unknown layer type 'GatedLinear'"):
        dry_run(gated_job())


def test_unknown_type_lists_operator_modules(installed: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"layers": [{"type": "Nope"}]},
            "data": {"dataset": "synthetic", "input_shape": [10], "num_classes": 3},
        }
    )
    with pytest.raises(SpecError) as info:
        dry_run(spec)
    assert "GatedLinear" in info.value.message and "Conv2d" in info.value.message
