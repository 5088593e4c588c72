"""Per-layer statistics recorded by module hooks, cheaply.

Hooks do nothing on steps that are not logged. On a logged step each captured tensor
is reduced on its own device as it appears (an in-place layer after it cannot change
what was seen), the rows are stacked, and ONE device-to-host copy per step brings
statistics, update ratios and histograms back together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from shared.spec import HookSpec
from worker.training.stats import SOME_NONFINITE, count_nonfinite, histograms, tensor_stats

KINDS = ("forward_pre", "forward", "backward", "param_grad", "weights")
# The order a non-finite value propagates in: inputs, outputs, then gradients.
KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class TraceRow:
    """Statistics of one tensor at one step; std is the population std (unbiased=False).

    Statistics that were not selected are None. `update_ratio` (param_grad) is
    ||w_after - w_before|| / ||w_before|| of the optimizer step; `histogram` holds
    `histogram_bins` counts over [min, max].
    """

    step: int
    layer: str
    kind: str
    numel: int
    norm: float
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    zero_frac: float | None
    nonfinite: int
    update_ratio: float | None = None
    histogram: list[float] | None = None
    seq: int = 0  # capture order within the step: forward order, then backward order


@dataclass(slots=True)
class _Pending:
    seq: int
    layer: str
    kind: str
    numel: int
    stats: torch.Tensor  # one row of tensor_stats
    hist: torch.Tensor | None
    tensor: torch.Tensor | None  # kept only while its count of non-finite values is unknown


def _matches(name: str, globs: Sequence[str]) -> bool:
    return not globs or any(fnmatchcase(name, g) for g in globs)


def _leaves(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    return ((n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None)


def _owners(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    # `is not None`: a parameter tensor has no single truth value.
    owned = ((n, m, next(m.parameters(recurse=False), None)) for n, m in model.named_modules())
    return ((n, m) for n, m, first in owned if first is not None)


class HookRecorder:
    """Registers the spec's hooks on `model` and turns what they see into TraceRows."""

    def __init__(self, model: nn.Module, spec: HookSpec) -> None:
        self.model = model
        self.kinds = frozenset(spec.kinds)
        self.every_n_steps = spec.every_n_steps
        self.stats = frozenset(spec.stats)
        self.bins = spec.histogram_bins
        self.hist_kinds = frozenset(spec.histogram_kinds)
        self.globs = list(spec.layers)
        self._params = [
            (name, p)
            for name, p in model.named_parameters()
            if _matches(name, self.globs) or _matches(name.rpartition(".")[0], self.globs)
        ]
        # Rows come back by kind, then in the model's own order (seq keeps capture order).
        names = [n for n, _ in model.named_modules()] + [n for n, _ in model.named_parameters()]
        self._position = {name: i for i, name in enumerate(names)}
        self._handles: list[RemovableHandle] = []
        self._pending: list[_Pending] = []
        self._before: list[torch.Tensor] | None = None
        self._armed = False
        self._grads_taken = False
        self._step = 0
        self._seq = 0

    # --- lifecycle -------------------------------------------------------------------

    def attach(self) -> HookRecorder:
        """Register the module hooks (idempotent)."""
        if self._handles:
            return self
        for name, module in _leaves(self.model):
            if not _matches(name, self.globs):
                continue
            if "forward_pre" in self.kinds:
                self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
            if "forward" in self.kinds:
                self._handles.append(module.register_forward_hook(self._output_hook(name)))
        if "backward" in self.kinds:
            for name, module in _owners(self.model):
                if _matches(name, self.globs):
                    self._handles.append(module.register_forward_hook(self._grad_hook(name)))
        return self

    def detach(self) -> None:
        """Remove every hook this recorder registered and drop anything captured."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.pause()

    def __enter__(self) -> HookRecorder:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    # --- per step --------------------------------------------------------------------

    def begin_step(self, step: int, *, force: bool = False) -> None:
        """Arm capture if this step is logged (step 1, every n-th, or `force`)."""
        self.pause()
        self._step = step
        self._seq = 0
        self._armed = force or step == 1 or step % self.every_n_steps == 0

    def pause(self) -> None:
        """Record nothing until the next begin_step (micro-batches before the last one)."""
        self._pending.clear()
        self._before = None
        self._armed = False
        self._grads_taken = False

    @property
    def armed(self) -> bool:
        """Whether this step is being recorded."""
        return self._armed

    def after_backward(self) -> None:
        """After backward, before clipping and the optimizer step: parameter gradients,
        and a copy of the weights so the step's update ratio can be measured."""
        self._take_grads(snapshot=True)

    def _take_grads(self, *, snapshot: bool) -> None:
        if not self._armed or self._grads_taken:
            return
        self._grads_taken = True
        if "param_grad" in self.kinds:
            named = [(n, p.grad) for n, p in self._params if p.requires_grad and p.grad is not None]
            self._add_batch(
                "param_grad", [n for n, _ in named], [g for _, g in named if g is not None]
            )
            tracked = [
                p.detach() for _, p in self._params if p.requires_grad and p.grad is not None
            ]
            # A copy of the weights (one pass) to measure the step's update against.
            if snapshot and tracked:
                self._before = list(torch._foreach_mul(tracked, 1.0))

    def collect(self, scale: float = 1.0) -> list[TraceRow]:
        """After the optimizer step: this step's rows (empty when the step is not logged).

        `scale` is a GradScaler's loss scale: `backward` rows were recorded during the
        scaled backward pass and are divided by it; counts do not change with it.
        """
        if not self._armed:
            return []
        self._take_grads(snapshot=False)  # no optimizer step was taken: no update ratio
        self._armed = False
        if "weights" in self.kinds:
            self._add_batch("weights", [n for n, _ in self._params], [p for _, p in self._params])
        pending, self._pending = self._pending, []
        if not pending:
            return []
        stats = torch.stack([p.stats for p in pending])
        if scale != 1.0:
            scaled = torch.tensor([p.kind == "backward" for p in pending], device=stats.device)
            stats[scaled, :5] /= scale  # norm, mean, std, min, max
        parts = [stats.reshape(-1)]
        ratios = self._update_ratios()
        if ratios is not None:
            parts.append(ratios.to(stats.device))
        hists = [p.hist for p in pending if p.hist is not None]
        if hists:
            parts.append(torch.stack(hists).reshape(-1).to(stats.device))
        flat = torch.cat(parts).cpu()  # the one device-to-host copy of the step
        rows = self._rows(pending, flat, with_ratios=ratios is not None)
        return sorted(rows, key=lambda r: (KIND_ORDER[r.kind], self._position.get(r.layer, 0)))

    # --- internals -------------------------------------------------------------------

    def _update_ratios(self) -> torch.Tensor | None:
        if self._before is None:
            return None
        after = [p.detach() for n, p in self._params if p.requires_grad and p.grad is not None]
        deltas = torch._foreach_sub(after, self._before)
        ratio = torch.stack(torch._foreach_norm(deltas)) / torch.stack(
            torch._foreach_norm(self._before)
        ).clamp_min(1e-30)
        self._before = None
        return ratio.double()

    def _rows(
        self, pending: list[_Pending], flat: torch.Tensor, *, with_ratios: bool
    ) -> list[TraceRow]:
        n = len(pending)
        table = flat[: n * 7].reshape(n, 7).tolist()
        offset = n * 7
        ratio_of: dict[int, float] = {}
        if with_ratios:
            grads = [i for i, p in enumerate(pending) if p.kind == "param_grad"]
            ratio_of = dict(zip(grads, flat[offset : offset + len(grads)].tolist(), strict=True))
            offset += len(grads)
        hist_rows = flat[offset:].reshape(-1, self.bins).tolist() if self.bins else []
        hist_iter = iter(hist_rows)
        rows = []
        for i, (p, (norm, mean, std, low, high, zeros, nonfinite)) in enumerate(
            zip(pending, table, strict=True)
        ):
            if nonfinite == SOME_NONFINITE and p.tensor is not None:
                nonfinite = count_nonfinite(p.tensor)  # rare: something overflowed
            rows.append(
                TraceRow(
                    step=self._step,
                    layer=p.layer,
                    kind=p.kind,
                    numel=p.numel,
                    norm=norm,
                    mean=mean if "mean" in self.stats else None,
                    std=std if "std" in self.stats else None,
                    min=low if "min" in self.stats else None,
                    max=high if "max" in self.stats else None,
                    zero_frac=zeros / p.numel if "zero_frac" in self.stats else None,
                    nonfinite=max(int(nonfinite), 0),
                    update_ratio=ratio_of.get(i),
                    histogram=next(hist_iter) if p.hist is not None else None,
                    seq=p.seq,
                )
            )
        return rows

    def _add(self, kind: str, name: str, tensor: torch.Tensor) -> None:
        self._add_batch(kind, [name], [tensor])

    def _add_batch(self, kind: str, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        if not tensors:
            return
        stats = tensor_stats(tensors, self.stats)
        hists = histograms(tensors, self.bins) if kind in self.hist_kinds and self.bins else None
        for i, (name, tensor) in enumerate(zip(names, tensors, strict=True)):
            self._seq += 1
            self._pending.append(
                _Pending(
                    seq=self._seq,
                    layer=name,
                    kind=kind,
                    numel=tensor.numel(),
                    stats=stats[i],
                    hist=hists[i] if hists is not None else None,
                    # Held so a non-finite count can be taken exactly on the rare bad step.
                    tensor=tensor.detach(),
                )
            )

    def _input_hook(self, name: str) -> Callable[[nn.Module, Any], None]:
        def on_input(module: nn.Module, args: Any) -> None:
            x = args[0] if args else None
            # Token ids (an Embedding's input) are not statistics material.
            if self._armed and isinstance(x, torch.Tensor) and x.numel() and x.is_floating_point():
                self._add("forward_pre", name, x)

        return on_input

    def _output_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def on_output(module: nn.Module, args: Any, output: Any) -> None:
            if self._armed and isinstance(output, torch.Tensor) and output.numel():
                self._add("forward", name, output)

        return on_output

    def _grad_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def on_output(module: nn.Module, args: Any, output: Any) -> None:
            if not self._armed or not isinstance(output, torch.Tensor):
                return
            if not output.requires_grad or output.numel() == 0:
                return

            # A tensor hook (not register_full_backward_hook) survives in-place layers
            # after this one, and sees the gradient of the value this module produced.
            def on_grad(grad: torch.Tensor) -> None:
                if self._armed:
                    self._add("backward", name, grad)

            output.register_hook(on_grad)

        return on_output
