"""`ModelSpec.init` rules and `ModelSpec.freeze` globs, applied right after construction.

Globs match `named_parameters()` names with `fnmatch.fnmatchcase` (so `*` also crosses
dots: `*.bias` is every bias). Init rules run in order, each over its matches in
`named_parameters()` order, so a later rule wins; the caller seeds torch first, which
makes the result a function of the job's seed. Checks work on the meta device too,
where no values exist and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

import torch
from torch import nn

from shared.errors import SpecError
from shared.spec import InitRule

# torch computes fans (or a QR) from a weight matrix: a bias vector has neither.
_NEEDS_2D = frozenset(
    {"xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"}
)

_SCHEMES: dict[str, Callable[[torch.Tensor, InitRule], object]] = {
    "xavier_uniform": lambda t, r: nn.init.xavier_uniform_(t, gain=r.gain),
    "xavier_normal": lambda t, r: nn.init.xavier_normal_(t, gain=r.gain),
    "kaiming_uniform": lambda t, r: nn.init.kaiming_uniform_(
        t, a=r.a, mode=r.mode, nonlinearity=r.nonlinearity
    ),
    "kaiming_normal": lambda t, r: nn.init.kaiming_normal_(
        t, a=r.a, mode=r.mode, nonlinearity=r.nonlinearity
    ),
    "orthogonal": lambda t, r: nn.init.orthogonal_(t, gain=r.gain),
    "normal": lambda t, r: nn.init.normal_(t, mean=r.mean, std=r.std),
    "uniform": lambda t, r: nn.init.uniform_(t, a=r.low, b=r.high),
    "zeros": lambda t, r: nn.init.zeros_(t),
    "ones": lambda t, r: nn.init.ones_(t),
    "constant": lambda t, r: nn.init.constant_(t, r.value),
}

Matched = list[tuple[str, nn.Parameter]]


def apply_init(model: nn.Module, rules: list[InitRule]) -> None:
    """Run the init rules in order (checks only, on the meta device)."""
    plan = _init_plan(model, rules)
    for rule, matched in plan:
        for _, param in matched:
            if not param.is_meta:
                _SCHEMES[rule.scheme](param, rule)


def apply_freeze(model: nn.Module, globs: list[str]) -> None:
    """Set requires_grad=False on every parameter a glob matches; something must stay trainable."""
    named = list(model.named_parameters())
    for index, pattern in enumerate(globs):
        matched = [param for name, param in named if fnmatchcase(name, pattern)]
        if not matched:
            problem = f"'{pattern}' matches no parameter of the model; {_names(named)}"
            raise SpecError.at(f"model.freeze[{index}]", problem)
        for param in matched:
            param.requires_grad_(False)
    if named and not any(param.requires_grad for _, param in named):
        problem = "these patterns freeze every parameter: nothing left to train"
        raise SpecError.at("model.freeze", problem)


def _init_plan(model: nn.Module, rules: list[InitRule]) -> list[tuple[InitRule, Matched]]:
    named = list(model.named_parameters())
    plan: list[tuple[InitRule, Matched]] = []
    for index, rule in enumerate(rules):
        loc = f"model.init[{index}]"
        matched = [(name, param) for name, param in named if fnmatchcase(name, rule.params)]
        if not matched:
            problem = f"params '{rule.params}' matches no parameter of the model; {_names(named)}"
            raise SpecError.at(f"{loc}.params", problem, label=loc)
        for name, param in matched:
            if rule.scheme in _NEEDS_2D and param.dim() < 2:
                problem = (
                    f"{rule.scheme} cannot initialise '{name}' of shape {tuple(param.shape)}: "
                    f"it needs a tensor of 2 or more dimensions (a weight, not a bias); "
                    f"narrow params '{rule.params}' or pick another scheme"
                )
                raise SpecError.at(f"{loc}.scheme", problem, label=loc)
        plan.append((rule, matched))
    return plan


def _names(named: Matched, shown: int = 8) -> str:
    if not named:
        return "it has no parameters"
    names = [name for name, _ in named]
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return f"its parameters: {', '.join(names[:shown])}{more}"
