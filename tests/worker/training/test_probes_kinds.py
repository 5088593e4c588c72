"""The other probe kinds, selection, update ratios, histograms, non-finite origin, alerts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.net.build import build_model
from shared.spec import AlertSpec, HookSpec, JobSpec
from shared.tensors import state_dict_to_bytes
from tests.support.fixture_types import TinyModel
from tests.support.traces import assert_rows_match, expected_row
from worker.training.alerts import AlertWatcher
from worker.training.callbacks import Callback
from worker.training.diagnose import TrainingDiverged, first_nonfinite, nonfinite_message
from worker.training.loop import fit
from worker.training.probes import KINDS, HookRecorder, TraceRow
from worker.training.stats import derive, reduce


def run_step(model: nn.Module, spec: HookSpec, x: torch.Tensor, lr: float = 0.1) -> list[TraceRow]:
    """One seed-style step with the recorder: zero_grad, forward, backward, step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with HookRecorder(model, spec) as recorder:
        optimizer.zero_grad()
        recorder.begin_step(1)
        model(x).sum().backward()
        recorder.after_backward()
        optimizer.step()
        return recorder.collect()


def test_forward_pre_and_forward_match_the_tensors(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    x = torch.randn(5, 4)
    rows = run_step(model, HookSpec(kinds=["forward_pre", "forward"]), x)
    with torch.no_grad():
        h = model[0](x)
        r = model[1](h)
        out = model[2](r)
    # Rows were taken before the optimizer step changed the weights: recompute with the
    # original weights (tiny_model seeds its init).
    fresh = tiny_model(inplace=False)
    with torch.no_grad():
        h, r = fresh[0](x), fresh[1](fresh[0](x))
        out = fresh[2](r)
    assert_rows_match(
        rows,
        [
            expected_row(1, "0", "forward_pre", x),
            expected_row(1, "1", "forward_pre", h),
            expected_row(1, "2", "forward_pre", r),
            expected_row(1, "0", "forward", h),
            expected_row(1, "1", "forward", r),
            expected_row(1, "2", "forward", out),
        ],
    )


def test_forward_output_is_seen_before_an_inplace_relu_changes_it(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=True)
    x = torch.randn(64, 4)
    rows = {(r.kind, r.layer): r for r in run_step(model, HookSpec(kinds=["forward"]), x)}
    with torch.no_grad():
        h = tiny_model(inplace=False)[0](x)
    assert rows[("forward", "0")].min == pytest.approx(h.min().item())  # negative: pre-ReLU
    assert rows[("forward", "1")].min == 0.0 and rows[("forward", "1")].zero_frac > 0


def test_update_ratio_and_weights(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = run_step(model, HookSpec(kinds=["param_grad", "weights"]), torch.randn(5, 4))
    by_key = {(r.kind, r.layer): r for r in rows}
    for name, p in model.named_parameters():
        ratio = (p.detach() - before[name]).norm() / before[name].norm()
        assert by_key[("param_grad", name)].update_ratio == pytest.approx(ratio.item(), rel=1e-5)
        assert by_key[("weights", name)].norm == pytest.approx(p.detach().norm().item(), rel=1e-6)
        assert by_key[("weights", name)].update_ratio is None


def test_layer_globs_stats_and_histograms(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    spec = HookSpec(kinds=["backward", "param_grad"], layers=["2*"], stats=["norm", "max"],
                    histogram_bins=8)  # fmt: skip
    rows = run_step(model, spec, torch.randn(5, 4))
    assert {(r.kind, r.layer) for r in rows} == {
        ("backward", "2"),
        ("backward", "2:input"),
        ("param_grad", "2.weight"),
        ("param_grad", "2.bias"),
    }
    for row in rows:
        assert row.mean is None and row.std is None and row.zero_frac is None
        assert row.max is not None and row.histogram is not None and len(row.histogram) == 8
        assert sum(row.histogram) == row.numel
        # The range the bins span comes with them, selected or not.
        assert row.min is not None and row.min <= row.max


def test_frozen_parameters_have_weights_rows_but_no_gradient_rows(tiny_model: TinyModel) -> None:
    model = tiny_model(inplace=False)
    for p in model[0].parameters():
        p.requires_grad_(False)
    rows = run_step(model, HookSpec(kinds=["param_grad", "weights"]), torch.randn(5, 4))
    assert {r.layer for r in rows if r.kind == "param_grad"} == {"2.weight", "2.bias"}
    assert {r.layer for r in rows if r.kind == "weights"} == {"0.weight", "0.bias", "2.weight",
                                                             "2.bias"}  # fmt: skip


def test_first_nonfinite_is_forward_order_then_backward() -> None:
    def row(kind: str, layer: str, seq: int, bad: int) -> TraceRow:
        return TraceRow(step=3, layer=layer, kind=kind, numel=4, norm=1.0, mean=None, std=None,
                        min=None, max=None, zero_frac=None, nonfinite=bad, seq=seq)  # fmt: skip

    rows = [row("forward", "fc1", 1, 0), row("forward", "fc2", 2, 1), row("backward", "fc2", 3, 4),
            row("backward", "fc1", 4, 4)]  # fmt: skip
    first = first_nonfinite(rows)
    assert first is not None and (first.kind, first.layer) == ("forward", "fc2")
    message = nonfinite_message(first, 3, float("nan"))
    assert message.startswith("non-finite output first seen in forward of 'fc2' at step 3")


class Events(Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.rows: dict[int, list[TraceRow]] = {}

    def on_event(self, *, event: object) -> None:
        self.events.append((event.kind, event.message))  # type: ignore[attr-defined]

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        if traces:
            self.rows[step] = traces


def _poisoned_job(on_nonfinite: str) -> tuple[JobSpec, bytes]:
    """A job starting from weights whose fc2.bias is NaN: fc2's output is NaN at step 1."""
    layers = [
        {"type": "Linear", "name": "fc1", "in_features": 10, "out_features": 8},
        {"type": "ReLU"},
        {"type": "Linear", "name": "fc2", "in_features": 8, "out_features": 1},
    ]
    spec = JobSpec.model_validate({
        "model": {"layers": layers,
                  "init_from": {"job_id": "00000000-0000-0000-0000-000000000001"}},
        "data": {"dataset": "synthetic", "task": "regression", "size": 64},
        "train": {"loss": "MSELoss", "max_steps": 4, "batch_size": 8},
        "hooks": {"every_n_steps": 100, "on_nonfinite": on_nonfinite},
    })  # fmt: skip
    state = build_model(spec.model).state_dict()
    state["fc2.bias"] = torch.tensor([float("nan")])
    return spec, state_dict_to_bytes(state)


def test_a_nan_is_traced_to_the_layer_and_step_where_it_appeared() -> None:
    cb = Events()
    spec, weights = _poisoned_job("fail")
    # The weights feed everything, so a NaN weight is where it starts.
    with pytest.raises(
        TrainingDiverged, match=r"non-finite weight first seen in weights of 'fc2.bias' at step 1"
    ):
        fit(spec, callbacks=[cb], initial_state=weights)
    assert cb.rows[1]  # the bad step's rows are handed on, although step 1 was not logged


def test_skip_step_mode_keeps_training_and_reports_events() -> None:
    cb = Events()
    spec, weights = _poisoned_job("skip_step")
    result = fit(spec, callbacks=[cb], initial_state=weights)
    assert result.steps == 4
    assert [kind for kind, _ in cb.events] == ["skipped_step"] * 4


def test_alerts_fire_once_per_layer() -> None:
    watcher = AlertWatcher(AlertSpec(vanishing_below=1e-3, exploding_above=10.0))

    def row(layer: str, norm: float, step: int) -> TraceRow:
        return TraceRow(step=step, layer=layer, kind="param_grad", numel=1, norm=norm, mean=None,
                        std=None, min=None, max=None, zero_frac=None, nonfinite=0)  # fmt: skip

    first = watcher.check([row("fc1.weight", 1e-5, 1), row("fc2.weight", 50.0, 1),
                           row("fc3.weight", 1.0, 1)])  # fmt: skip
    assert [e.kind for e in first] == ["vanishing_gradient", "exploding_gradient"]
    assert "'fc1.weight'" in first[0].message and "step 1" in first[0].message
    assert watcher.check([row("fc1.weight", 1e-6, 2)]) == []  # once per layer


class Grab(Events):
    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        self.model = model


def _hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_after_the_job_and_after_a_failure() -> None:
    spec, weights = _poisoned_job("fail")
    every = JobSpec.model_validate({**spec.model_dump(), "hooks": {"kinds": list(KINDS)}})
    cb = Grab()
    with pytest.raises(TrainingDiverged):
        fit(every, callbacks=[cb], initial_state=weights)
    assert _hooks_left(cb.model) == 0
    healthy = JobSpec.model_validate(
        {**every.model_dump(), "model": {**every.model_dump()["model"], "init_from": None}}
    )
    cb = Grab()
    fit(healthy, callbacks=[cb])
    assert _hooks_left(cb.model) == 0 and cb.rows[1]


def test_alerts_reach_callbacks_as_events() -> None:
    spec, _ = _poisoned_job("fail")
    raw = spec.model_dump()
    raw["model"]["init_from"] = None
    raw["hooks"] = {"every_n_steps": 1, "alerts": {"exploding_above": 1e-9}}
    cb = Events()
    fit(JobSpec.model_validate(raw), callbacks=[cb])
    kinds = [kind for kind, _ in cb.events]
    # Once per layer and kind: fc1, fc2 outputs, fc2's input; four parameters.
    assert kinds == ["exploding_gradient"] * 7


def test_std_is_accurate_for_large_means_and_histograms_carry_their_range(
    tiny_model: TinyModel,
) -> None:
    x = 1.0 + 1e-3 * torch.randn(10_000)
    raw = reduce([x], ["std"], shifted=True)[0].tolist()
    assert derive(raw, x.numel(), ["std"])["std"] == pytest.approx(x.std(unbiased=False).item(),
                                                                     rel=1e-3)  # fmt: skip
    model = tiny_model(inplace=False)
    spec = HookSpec(kinds=["weights"], stats=["norm"], histogram_bins=5)
    (row, *_rest) = run_step(model, spec, torch.randn(3, 4))
    assert row.histogram is not None and sum(row.histogram) == row.numel


def test_skip_step_puts_batchnorm_statistics_back() -> None:
    spec, _ = _poisoned_job("skip_step")
    raw = spec.model_dump()
    layers = raw["model"]["layers"]
    raw["model"]["layers"] = [layers[0], {"type": "BatchNorm1d", "name": "bn",
                                          "num_features": 8}, *layers[1:]]  # fmt: skip
    state = build_model(JobSpec.model_validate(raw).model).state_dict()
    state["fc2.bias"] = torch.tensor([float("nan")])
    cb = Grab()
    fit(JobSpec.model_validate(raw), callbacks=[cb], initial_state=state_dict_to_bytes(state))
    bn = dict(cb.model.named_buffers())
    assert int(bn["bn.num_batches_tracked"]) == 0 and torch.equal(bn["bn.running_mean"],
                                                                   torch.zeros(8))  # fmt: skip
