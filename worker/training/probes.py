"""Per-layer statistics recorded by module hooks, cheaply.

Hooks are registered only while a logged step runs: the steps in between run the model
exactly as a plain loop does (a module without hooks takes PyTorch's fast call path).
On a logged step each captured tensor
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

from shared.net.order import LayerOrder
from shared.spec import HookSpec
from shared.spec.hooks import HOOK_KINDS, stats_for
from worker.training.ranks import RANK_LOCAL_KINDS, Ranks
from worker.training.stats import (
    RAW,
    derive,
    histograms,
    reduce,
    squared_norms,
)

KINDS = HOOK_KINDS
NORM_ONLY = frozenset({"norm"})
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
    nonfinite: int | None  # None: not selected (a non-finite norm still shows there are some)
    update_ratio: float | None = None
    histogram: list[float] | None = None
    seq: int = 0  # capture order within the step: forward order, then backward order
    rank: int | None = None  # hooks.per_rank: one rank's own share (None: the whole batch)


@dataclass(slots=True)
class _Pending:
    seq: int
    layer: str
    kind: str
    numel: int
    tensor: torch.Tensor | None  # held only until reduced (capture or after backward)
    reduced: bool = False
    has_hist: bool = False


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

    def __init__(self, model: nn.Module, spec: HookSpec, ranks: Ranks | None = None) -> None:
        self.model = model
        # In a distributed job, rows of rank-local tensors are merged over the ranks.
        self.ranks = ranks if ranks is not None and ranks.distributed else None
        self.per_rank = spec.per_rank
        self.kinds = frozenset(spec.kinds)
        self.every_n_steps = spec.every_n_steps
        self.full_period = spec.every_n_steps * spec.full_every
        self.stats = {kind: stats_for(kind, spec.stats) for kind in KINDS}
        self.bins = spec.histogram_bins
        self.hist_kinds = frozenset(spec.histogram_kinds)
        self.globs = list(spec.layers)
        self._params = [
            (name, p)
            for name, p in model.named_parameters()
            if _matches(name, self.globs) or _matches(name.rpartition(".")[0], self.globs)
        ]
        # Rows come back by kind, then in the model's own order (seq keeps capture order).
        self._order = LayerOrder.of(model)
        self._handles: list[RemovableHandle] = []
        self._attached = False
        self._pending: list[_Pending] = []
        # Reduced batches: (items, their stats.reduce() rows, their histograms or None).
        # Kept as blocks, concatenated once per step: no per-tensor row views.
        self._blocks: list[tuple[list[_Pending], torch.Tensor, torch.Tensor | None]] = []
        # Weights as they were before the optimizer step (update ratio): a buffer kept
        # across steps, so a logged step copies into it instead of allocating a model's worth.
        self._before: list[torch.Tensor] | None = None
        self._before_buffer: list[torch.Tensor] = []
        self._before_sq: torch.Tensor | None = None
        self._armed = False
        self._full = False  # this logged step records every selected statistic
        self._grads_taken = False
        self._step = 0
        self._seq = 0

    # --- lifecycle -------------------------------------------------------------------

    def attach(self) -> HookRecorder:
        """Start recording: the hooks are registered for each logged step (idempotent)."""
        self._attached = True
        return self

    @property
    def _permanent(self) -> bool:
        # Every step logged: the hooks stay registered between steps (they do nothing
        # while not armed), instead of one registration per module per step. Otherwise
        # unlogged steps run without hooks, at the loop's own speed.
        return self.every_n_steps == 1

    def _idle(self) -> None:
        """Between logged steps: unregister the hooks unless they stay (see _permanent)."""
        if not self._permanent:
            self._unregister()

    def _register(self) -> None:
        if self._handles or not self._attached:
            return
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
                    pre = module.register_forward_pre_hook(self._input_grad_hook(name))
                    self._handles.append(pre)

    def _unregister(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def detach(self) -> None:
        """Remove every hook this recorder registered and drop anything captured."""
        self._attached = False
        self.pause()
        self._unregister()

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
        # Norms on every logged step; the rest (update ratio, histograms) on step 1 and
        # every full_period-th: a norm is one dot per tensor, the update ratio a copy of
        # every weight.
        self._full = self._armed and (force or step == 1 or step % self.full_period == 0)
        if self._armed:
            self._register()

    def pause(self) -> None:
        """Record nothing until the next begin_step (micro-batches before the last one)."""
        self._idle()
        self._pending.clear()
        self._blocks.clear()
        self._before = None
        self._armed = False
        self._grads_taken = False

    def after_backward(self) -> None:
        """After backward, before clipping and the optimizer step: reduce the captured
        gradients (a few batched launches, no sync), and copy the weights if the step's
        update ratio is wanted."""
        self._take_grads(snapshot=True)

    def _take_grads(self, *, snapshot: bool) -> None:
        if not self._armed or self._grads_taken:
            return
        self._grads_taken = True
        if "param_grad" in self.kinds:
            named = [(n, p) for n, p in self._params if p.requires_grad and p.grad is not None]
            for name, p in named:
                assert p.grad is not None
                self._capture("param_grad", name, p.grad)
            if snapshot and named and "update_ratio" in self._stats("param_grad"):
                # A copy of the weights (one pass) to measure the step's update against.
                weights = [p.detach().reshape(-1) for _, p in named]
                if [b.shape for b in self._before_buffer] != [w.shape for w in weights]:
                    self._before_buffer = [torch.empty_like(w) for w in weights]
                torch._foreach_copy_(self._before_buffer, weights)
                self._before = self._before_buffer
                self._before_sq = squared_norms(weights)
        self._reduce_deferred()

    def collect(
        self, scale: float = 1.0, scaled: tuple[str, ...] = ("backward",)
    ) -> list[TraceRow]:
        """After the optimizer step: this step's rows (empty when the step is not logged).

        `scale` is a GradScaler's loss scale: rows of the `scaled` kinds were recorded
        from scaled gradients and are divided by it on the host; counts do not change.
        """
        if not self._armed:
            return []
        self._take_grads(snapshot=False)  # no optimizer step was taken: no update ratio
        self._armed = False
        self._idle()  # the backward pass is over: every tensor hook has fired
        if "weights" in self.kinds:
            for name, p in self._params:
                self._capture("weights", name, p)
            self._reduce_deferred()
        assert all(p.reduced for p in self._pending), "every captured tensor is reduced"
        blocks, self._blocks, self._pending = self._blocks, [], []
        if not blocks:
            return []
        pending = [p for items, _, _ in blocks for p in items]
        raw = torch.cat([b for _, b, _ in blocks]) if len(blocks) > 1 else blocks[0][1]
        parts = [raw.reshape(-1)]
        ratios = self._update_ratios()
        if ratios is not None:
            parts.append(ratios.to(raw.device))
        hists = [h for _, _, h in blocks if h is not None]
        if hists:
            parts.append(torch.cat(hists).reshape(-1).to(raw.device))
        flat = torch.cat(parts).cpu()  # the one device-to-host copy of the step
        return self._rows(pending, flat, with_ratios=ratios is not None, scale=scale,
                          scaled=scaled)  # fmt: skip

    def _stats(self, kind: str) -> frozenset[str]:
        """The statistics this step records of `kind` (see begin_step)."""
        return self.stats[kind] if self._full else NORM_ONLY

    def _row_order(self, row: TraceRow) -> tuple[int, int, int]:
        return KIND_ORDER[row.kind], *self._order.key(row.layer)

    def _update_ratios(self) -> torch.Tensor | None:
        if self._before is None:
            return None
        after = [
            p.detach().reshape(-1)
            for _, p in self._params
            if p.requires_grad and p.grad is not None
        ]
        assert self._before_sq is not None
        torch._foreach_sub_(self._before, after)  # in place: before - after = -update
        ratio = squared_norms(self._before).sqrt() / self._before_sq.sqrt().clamp_min(1e-30)
        self._before = self._before_sq = None
        return ratio

    def _rows(
        self,
        pending: list[_Pending],
        flat: torch.Tensor,
        *,
        with_ratios: bool,
        scale: float,
        scaled: tuple[str, ...],
    ) -> list[TraceRow]:
        n = len(pending)
        width = len(RAW)
        raw_table = flat[: n * width].reshape(n, width)
        numels = [p.numel for p in pending]
        ranks_tables = None
        if self.ranks is not None:
            keys = [(p.kind, p.layer) for p in pending]
            raw_table, numels, ranks_tables = self.ranks.merge_rows(keys, numels, raw_table)
        table = raw_table.tolist()
        offset = n * width
        ratio_of: dict[int, float] = {}
        if with_ratios:
            grads = [i for i, p in enumerate(pending) if p.kind == "param_grad"]
            ratio_of = dict(zip(grads, flat[offset : offset + len(grads)].tolist(), strict=True))
            offset += len(grads)
        hist_rows = iter(flat[offset:].reshape(-1, self.bins).tolist() if self.bins else [])
        rows = [
            self._row(p, raw, numel, scale if p.kind in scaled else 1.0,
                      update_ratio=ratio_of.get(i),
                      histogram=next(hist_rows) if p.has_hist else None)
            for i, (p, raw, numel) in enumerate(zip(pending, table, numels, strict=True))
        ]  # fmt: skip
        rows.sort(key=self._row_order)
        if ranks_tables is not None and self.per_rank:
            # Each rank's own rows of the rank-local kinds, after the whole batch's.
            for rank, own in enumerate(ranks_tables.tolist()):
                rows += [
                    self._row(p, values[1:], int(values[0]), scale if p.kind in scaled else 1.0,
                              rank=rank)
                    for p, values in zip(pending, own, strict=True)
                    if p.kind in RANK_LOCAL_KINDS
                ]  # fmt: skip
        return rows

    def _row(
        self,
        p: _Pending,
        raw: list[float],
        numel: int,
        scale: float,
        *,
        update_ratio: float | None = None,
        histogram: list[float] | None = None,
        rank: int | None = None,
    ) -> TraceRow:
        """A TraceRow from one row of stats.reduce(), divided by `scale` (see collect)."""
        if scale != 1.0:
            norm, mean, var, low, high, *counts = raw
            raw = [norm / scale, mean / scale, var / scale**2, low / scale, high / scale, *counts]
        stats = self._stats(p.kind)
        if histogram is not None:  # a histogram's bins mean nothing without its range
            stats = stats | {"min", "max"}
        return TraceRow(
            step=self._step,
            layer=p.layer,
            kind=p.kind,
            numel=numel,
            norm=raw[0],
            **derive(raw, numel, stats),
            nonfinite=int(raw[6]) if "nonfinite" in stats else None,
            update_ratio=update_ratio,
            histogram=histogram,
            seq=p.seq,
            rank=rank,
        )

    def _capture(self, kind: str, name: str, tensor: torch.Tensor, *, now: bool = False) -> None:
        """Queue a tensor; `now` reduces it at once (it may change in place afterwards)."""
        self._seq += 1
        item = _Pending(
            seq=self._seq, layer=name, kind=kind, numel=tensor.numel(), tensor=tensor.detach()
        )
        self._pending.append(item)
        if now:
            self._reduce([item])

    def _reduce_deferred(self) -> None:
        """Reduce every queued tensor not yet reduced, in one batched call per kind."""
        waiting = [p for p in self._pending if not p.reduced]
        # In hook order, not a set's: every rank of a distributed job lists rows alike.
        for kind in [k for k in KINDS if any(p.kind == k for p in waiting)]:
            self._reduce([p for p in waiting if p.kind == kind])

    def _reduce(self, items: list[_Pending]) -> None:
        kind = items[0].kind
        histogram = bool(self.bins) and kind in self.hist_kinds and self._full
        tensors = [p.tensor for p in items if p.tensor is not None]
        raw = reduce(tensors, self._stats(kind), bounds=histogram, shifted=kind == "weights")
        hists = histograms(tensors, raw, self.bins) if histogram else None
        self._blocks.append((items, raw, hists))
        for item in items:
            item.reduced, item.has_hist = True, hists is not None
            item.tensor = None  # reduced: no need to keep the activation or gradient alive

    def _input_hook(self, name: str) -> Callable[[nn.Module, Any], None]:
        def on_input(module: nn.Module, args: Any) -> None:
            x = args[0] if args else None
            # Token ids (an Embedding's input) are not statistics material.
            if self._armed and isinstance(x, torch.Tensor) and x.numel() and x.is_floating_point():
                self._capture("forward_pre", name, x, now=True)

        return on_input

    def _output_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def on_output(module: nn.Module, args: Any, output: Any) -> None:
            if self._armed and isinstance(output, torch.Tensor) and output.numel():
                self._capture("forward", name, output, now=True)

        return on_output

    def _input_grad_hook(self, name: str) -> Callable[[nn.Module, Any], Any]:
        def on_input(module: nn.Module, args: Any) -> Any:
            x = args[0] if args else None
            if not self._armed or not isinstance(x, torch.Tensor) or not x.requires_grad:
                return None
            # The module gets a view of its input, so the hook sees only the gradient that
            # flows back through this module (what grad_input means), not the sum over
            # every use of the tensor (a residual connection adds another).
            view = x.view_as(x)

            def on_grad(grad: torch.Tensor) -> None:
                if self._armed:
                    self._capture("backward", f"{name}:input", grad)

            view.register_hook(on_grad)  # type: ignore[no-untyped-call]  # torch: untyped
            return (view, *args[1:])

        return on_input

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
                    self._capture("backward", name, grad)  # reduced with the rest, batched

            output.register_hook(on_grad)  # type: ignore[no-untyped-call]  # torch: untyped

        return on_output
