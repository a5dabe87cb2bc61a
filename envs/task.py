"""`Task`: one MDP of a task family, an immutable value (name, split, physics parameters)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

Split = Literal["train", "interpolation", "extrapolation"]
SPLITS: tuple[str, ...] = ("train", "interpolation", "extrapolation")


@dataclass(frozen=True)
class Task:
    """One task of a family: hashable, comparable, safe to share between processes.

    Attributes:
        family: name of the task family (``"acrobot"``).
        name: unique name inside the family (``"train-003"``, ``"extrap-heavy"``).
        split: ``"train"``, ``"interpolation"`` (held out, inside the train ranges) or
            ``"extrapolation"`` (held out, outside the train ranges).
        params: physics parameters as sorted ``(name, value)`` pairs; see :attr:`parameters`.

    Example:
        >>> t = Task("acrobot", "t0", "train", {"link1_mass": 1.2, "link2_mass": 0.9})
        >>> t.parameters["link1_mass"]
        1.2
    """

    family: str
    name: str
    split: Split
    params: tuple[tuple[str, float], ...]

    def __init__(self, family: str, name: str, split: Split, params: Mapping[str, float]):
        if split not in SPLITS:
            raise ValueError(f"Task {name!r}: split must be one of {SPLITS}, got {split!r}")
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "split", split)
        object.__setattr__(self, "params", tuple(sorted((k, float(v)) for k, v in params.items())))

    @property
    def parameters(self) -> dict[str, float]:
        """The physics parameters as a fresh ``dict`` (mutating it does not touch the task)."""
        return dict(self.params)

    def tensor(self, names: tuple[str, ...]) -> torch.Tensor:
        """Parameters in the order ``names`` as a float32 tensor ``[P]``."""
        values = self.parameters
        return torch.tensor([values[n] for n in names], dtype=torch.float32)


def validate_params(where: str, params: Mapping[str, float], expected: tuple[str, ...]) -> dict[str, float]:
    """Check physics parameters: known names, finite and strictly positive values.

    Raises:
        ValueError: naming the bad name or value and what was expected.
    """
    unknown = sorted(set(params) - set(expected))
    if unknown:
        raise ValueError(f"{where}: unknown physics parameter(s) {unknown}; expected names in {list(expected)}")
    out = {}
    for key, value in params.items():
        value = float(value)
        if not math.isfinite(value) or value <= 0.0:
            raise ValueError(f"{where}: physics parameter {key}={value!r} must be a finite number > 0")
        out[key] = value
    return out
