"""HookRecorder rows agree with gradients computed directly by autograd."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from shared.spec import HookSpec
from shared.spec.hooks import ALL_STATS
from tests.support.fixture_types import TinyModel
from tests.support.traces import assert_rows_match, expected_row
from worker.training.probes import HookRecorder
from worker.training.stats import derive, reduce


def test_rows_match_autograd_through_an_inplace_relu(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=True)
    reference = tiny_model(inplace=False)  # same weights: same seed
    x = torch.randn(6, 4)
    x[0] = -10.0  # makes some ReLU outputs exactly zero, so zero_frac is exercised

    with HookRecorder(
        model, HookSpec(kinds=["backward", "param_grad"], every_n_steps=1, stats=list(ALL_STATS))
    ) as recorder:
        recorder.begin_step(1)
        model(x).pow(2).sum().backward()
        rows = recorder.collect()

    # Direct: retain_grad on the (not in-place) outputs of the modules that own parameters.
    hidden = reference[0](x)
    hidden.retain_grad()
    relu = reference[1](hidden)
    relu.retain_grad()
    out = reference[2](relu)
    out.retain_grad()
    out.pow(2).sum().backward()

    # Layer "0" gets the data (no gradient); layer "2"'s input is the ReLU's output.
    expected = [
        expected_row(1, "0", "backward", hidden.grad),
        expected_row(1, "2", "backward", out.grad),
        expected_row(1, "2:input", "backward", relu.grad),
    ] + [expected_row(1, name, "param_grad", p.grad) for name, p in reference.named_parameters()]
    assert_rows_match(rows, expected)
    assert any(row.zero_frac > 0 for row in rows)


def test_layer_names_are_qualified_module_names() -> None:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc", nn.Linear(2 * 6 * 6, 3))
    with HookRecorder(
        model, HookSpec(kinds=["backward", "param_grad"], every_n_steps=1)
    ) as recorder:
        recorder.begin_step(1)
        model(torch.randn(2, 1, 8, 8)).sum().backward()
        rows = recorder.collect()
    assert [(r.kind, r.layer) for r in rows] == [
        ("backward", "features.0"),
        ("backward", "fc"),
        ("backward", "fc:input"),
        ("param_grad", "features.0.weight"),
        ("param_grad", "features.0.bias"),
        ("param_grad", "fc.weight"),
        ("param_grad", "fc.bias"),
    ]


def test_nonfinite_values_are_counted_exactly() -> None:
    values = torch.tensor([1.0, float("nan"), float("inf"), 0.0])
    raw = reduce([values], ALL_STATS)[0].tolist()
    derived = derive(raw, 4, ALL_STATS)
    assert derived["zero_frac"] == 0.25 and not math.isfinite(raw[0])
    assert derived["mean"] is not None and math.isnan(derived["mean"])  # explicitly NaN
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, float("nan")], [float("inf"), 0.0]]))
    model = nn.Sequential(layer)
    with HookRecorder(model, HookSpec(kinds=["weights"], stats=list(ALL_STATS))) as recorder:
        recorder.begin_step(1)
        (row, _bias) = recorder.collect()
    assert row.layer == "0.weight" and row.nonfinite == 2 and row.zero_frac == 0.25


def test_single_element_has_zero_std() -> None:
    raw = reduce([torch.tensor([3.0])], ALL_STATS)[0].tolist()
    assert derive(raw, 1, ALL_STATS) == {"mean": 3.0, "std": 0.0, "min": 3.0, "max": 3.0,
                                         "zero_frac": 0.0}  # fmt: skip


def test_only_every_nth_step_and_the_first_are_recorded(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    logged = []
    with HookRecorder(
        model, HookSpec(kinds=["backward", "param_grad"], every_n_steps=3)
    ) as recorder:
        for step in range(1, 8):
            model.zero_grad()
            recorder.begin_step(step)
            model(torch.randn(2, 4)).sum().backward()
            rows = recorder.collect()
            if rows:
                logged.append(step)
                assert {row.step for row in rows} == {step}
    assert logged == [1, 3, 6]


def test_logged_steps_between_full_ones_record_norms_only(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = HookSpec(kinds=["backward", "param_grad"], every_n_steps=2, full_every=3,
                    histogram_bins=4)  # fmt: skip
    full, norms_only = [], []
    with HookRecorder(model, spec) as recorder:
        for step in range(1, 13):
            optimizer.zero_grad()
            recorder.begin_step(step)
            model(torch.randn(2, 4)).sum().backward()
            grads = {name: p.grad.clone() for name, p in model.named_parameters()}
            recorder.after_backward()
            optimizer.step()
            rows = recorder.collect()
            if not rows:
                continue
            params = [r for r in rows if r.kind == "param_grad"]
            for row in params:  # the norm is exact on every logged step
                assert row.norm == pytest.approx(float(grads[row.layer].norm()), rel=1e-6)
            if all(r.std is not None and r.histogram is not None for r in rows):
                assert all(r.update_ratio is not None for r in params)
                full.append(step)
            else:
                assert all(
                    (r.mean, r.std, r.max, r.update_ratio, r.histogram) == (None,) * 5 for r in rows
                )
                norms_only.append(step)
    # Step 1, then the multiples of every_n_steps * full_every.
    assert full == [1, 6, 12] and norms_only == [2, 4, 8, 10]


def test_unarmed_hooks_capture_nothing(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    recorder = HookRecorder(model, HookSpec(kinds=["backward"], every_n_steps=2)).attach()
    recorder.begin_step(2)
    with torch.no_grad():  # an evaluation pass inside a logged step adds no rows
        model(torch.randn(2, 4))
    assert recorder.collect() == []
    recorder.begin_step(3)  # not a logged step: the backward pass records nothing
    model(torch.randn(2, 4)).sum().backward()
    assert recorder.collect() == []
    recorder.begin_step(4)  # a logged step again: each Linear's output, and "2"'s input
    model(torch.randn(2, 4)).sum().backward()
    assert [r.layer for r in recorder.collect()] == ["0", "2", "2:input"]
    recorder.detach()


def test_kinds_select_rows(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    with HookRecorder(model, HookSpec(kinds=["param_grad"], every_n_steps=1)) as recorder:
        recorder.begin_step(1)
        model(torch.randn(2, 4)).sum().backward()
        assert {row.kind for row in recorder.collect()} == {"param_grad"}
    assert all(not m._forward_hooks for m in model.modules())


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_exist_only_while_a_logged_step_runs(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=True)
    recorder = HookRecorder(model, HookSpec(kinds=["backward", "param_grad"], every_n_steps=2))
    recorder.attach()
    recorder.attach()  # attaching twice must not register twice
    assert _hook_count(model) == 0  # nothing until a logged step
    recorder.begin_step(1)
    assert _hook_count(model) == 4  # each Linear: an output hook and an input pre-hook
    model(torch.randn(2, 4)).sum().backward()
    assert recorder.collect() and _hook_count(model) == 0  # gone once the step is read
    recorder.begin_step(3)  # not logged: the model runs bare, as in a plain loop
    assert _hook_count(model) == 0
    recorder.begin_step(4)
    recorder.begin_step(4)
    assert _hook_count(model) == 4
    recorder.pause()  # a micro-batch before the last one
    assert _hook_count(model) == 0
    recorder.begin_step(6)
    recorder.detach()
    assert all(not m._forward_hooks for m in model.modules())
    assert all(not m._backward_hooks for m in model.modules())


def test_hooks_stay_between_steps_when_every_step_is_logged(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=True)
    recorder = HookRecorder(model, HookSpec(kinds=["backward", "param_grad"], every_n_steps=1))
    recorder.attach()
    recorder.begin_step(1)
    model(torch.randn(2, 4)).sum().backward()
    first = [(r.layer, r.kind) for r in recorder.collect()]
    assert first and _hook_count(model) == 4  # kept: no registration per module per step
    recorder.begin_step(2)
    recorder.pause()  # a micro-batch before the last one: the hooks fire and record nothing
    model(torch.randn(2, 4)).sum().backward()
    recorder.begin_step(2)
    model.zero_grad()
    model(torch.randn(2, 4)).sum().backward()
    assert [(r.layer, r.kind) for r in recorder.collect()] == first  # one pass's rows, once
    recorder.detach()
    assert _hook_count(model) == 0


def test_context_manager_detaches_on_error(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    with (
        pytest.raises(RuntimeError),
        HookRecorder(model, HookSpec(kinds=["backward"], every_n_steps=1)),
    ):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="kinds"):
        HookSpec.model_validate({"kinds": ["sideways"]})


def test_loss_scale_is_divided_out_of_output_gradients(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    x = torch.randn(3, 4)
    plain = HookRecorder(model, HookSpec(kinds=["backward"], every_n_steps=1)).attach()
    plain.begin_step(1)
    model(x).sum().backward()
    expected = plain.collect()
    plain.detach()
    scaled = HookRecorder(model, HookSpec(kinds=["backward"], every_n_steps=1)).attach()
    scaled.begin_step(1)
    (model(x).sum() * 1024.0).backward()  # what GradScaler does to the loss
    rows = scaled.collect(scale=1024.0)
    scaled.detach()
    for want, got in zip(expected, rows, strict=True):
        assert got.norm == pytest.approx(want.norm, rel=1e-6)
        assert got.max == pytest.approx(want.max, rel=1e-6)
        assert got.zero_frac == want.zero_frac
