"""Per-layer gradient statistics recorded by module hooks, cheaply.

Statistics are reduced on the gradient's own device as each gradient appears; the
small per-gradient rows are stacked and copied to the host once per logged step.
Nothing is computed, and nothing is synchronised, on steps that are not logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

KINDS = ("backward", "param_grad")


@dataclass(frozen=True, slots=True)
class TraceRow:
    """Statistics of one gradient at one step; std is the population std (unbiased=False)."""

    step: int
    layer: str
    kind: str
    numel: int
    norm: float
    mean: float
    std: float
    min: float
    max: float
    zero_frac: float
    nonfinite: int


@dataclass(slots=True)
class _Pending:
    order: int  # position in named_modules()/named_parameters(), for a stable row order
    layer: str
    kind: str
    numel: int
    stats: torch.Tensor  # see gradient_stats


def gradient_stats(grad: torch.Tensor, norm: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [norm, mean, std, min, max, zeros, nonfinite] of a gradient, on its device.

    std is the population standard deviation (unbiased=False), so one element gives 0.
    Counts are exact: they are reduced as integers and only then widened to float64.
    """
    x = grad.detach().reshape(-1)
    if x.element_size() < 4:  # half-precision sums lose too much
        x = x.float()
    if norm is None:
        norm = torch.linalg.vector_norm(x)
    std, mean = torch.std_mean(x, correction=0)
    low, high = torch.aminmax(x)
    values = torch.stack([norm.to(x.dtype), mean, std, low, high]).double()
    counts = torch.stack([(x == 0).sum(), (~torch.isfinite(x)).sum()]).double()
    return torch.cat([values, counts])


class HookRecorder:
    """Records `backward` (grad of each parameter-owning module's output) and `param_grad`."""

    def __init__(self, model: nn.Module, *, kinds: Sequence[str], every_n_steps: int) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown hook kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be at least 1")
        self.model = model
        self.kinds = frozenset(kinds)
        self.every_n_steps = every_n_steps
        self._handles: list[RemovableHandle] = []
        self._pending: list[_Pending] = []
        self._armed = False
        self._step = 0

    def attach(self) -> HookRecorder:
        """Register the module hooks (idempotent)."""
        if self._handles or "backward" not in self.kinds:
            return self
        for order, (name, module) in enumerate(self.model.named_modules()):
            # next(), not any(): any() would ask each parameter tensor for its truth value.
            if next(module.parameters(recurse=False), None) is not None:
                hook = self._output_hook(order, name)
                self._handles.append(module.register_forward_hook(hook))
        return self

    def detach(self) -> None:
        """Remove every hook this recorder registered and drop anything captured."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()
        self._armed = False

    def __enter__(self) -> HookRecorder:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def begin_step(self, step: int) -> None:
        """Arm capture for this step if it is a logged one (step 1 and every n-th)."""
        self._step = step
        self._pending.clear()
        self._armed = step == 1 or step % self.every_n_steps == 0

    def pause(self) -> None:
        """Record nothing until the next begin_step (micro-batches before the last one)."""
        self._pending.clear()
        self._armed = False

    def collect(self, scale: float = 1.0) -> list[TraceRow]:
        """After backward: this step's rows (empty when the step is not logged).

        `scale` is the loss scale of a GradScaler: `backward` rows were recorded during
        the scaled backward pass and are divided by it (param_grad rows are taken after
        unscaling). Zero and non-finite counts do not change with the scale.
        """
        if not self._armed:
            return []
        self._armed = False
        pending, self._pending = self._pending, []
        if "param_grad" in self.kinds:
            pending.extend(self._param_grads())
        if not pending:
            return []
        pending.sort(key=lambda p: (p.kind, p.order))
        # The one device-to-host copy of the step.
        stats = torch.stack([p.stats for p in pending])
        if scale != 1.0:
            scaled = torch.tensor([p.kind == "backward" for p in pending], device=stats.device)
            stats[scaled, :5] /= scale  # norm, mean, std, min, max; counts stay
        table = stats.cpu().tolist()
        return [
            TraceRow(
                step=self._step,
                layer=p.layer,
                kind=p.kind,
                numel=p.numel,
                norm=norm,
                mean=mean,
                std=std,
                min=low,
                max=high,
                zero_frac=zeros / p.numel,
                nonfinite=int(nonfinite),
            )
            for p, (norm, mean, std, low, high, zeros, nonfinite) in zip(
                pending, table, strict=True
            )
        ]

    def _output_hook(self, order: int, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def on_forward(module: nn.Module, args: Any, output: Any) -> None:
            # Validation and unlogged steps pass straight through.
            if not self._armed or not isinstance(output, torch.Tensor):
                return
            if not output.requires_grad or output.numel() == 0:
                return
            numel = output.numel()

            # A tensor hook (not register_full_backward_hook) survives in-place layers
            # after this one, and sees the gradient of the value this module produced.
            def on_grad(grad: torch.Tensor) -> None:
                if self._armed:
                    self._pending.append(
                        _Pending(order, name, "backward", numel, gradient_stats(grad))
                    )

            output.register_hook(on_grad)

        return on_forward

    def _param_grads(self) -> list[_Pending]:
        named = [
            (order, name, p.grad)
            for order, (name, p) in enumerate(self.model.named_parameters())
            if p.requires_grad and p.grad is not None and p.grad.numel() > 0
        ]
        if not named:
            return []
        # One fused kernel for all the norms instead of one launch per parameter.
        norms = torch._foreach_norm([grad for _, _, grad in named])
        return [
            _Pending(order, name, "param_grad", grad.numel(), gradient_stats(grad, norm))
            for (order, name, grad), norm in zip(named, norms, strict=True)
        ]
