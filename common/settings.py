"""`Settings`: the base of a block of settings a config gives as one mapping (``ppo: {lr: 0.001}``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Self

from common.validation import Range


@dataclass(frozen=True)
class Settings:
    """A frozen dataclass of one concern's settings (PPO, MPPI, the budget, the meta-test).

    A class takes a block as one argument whose default is its own instance (``metatest:
    MetaTestSettings = MetaTestSettings(episodes=10)``): LightningCLI then fills the fields a config
    leaves out from that default, and :meth:`of` does the same for a mapping given in Python or read
    from a checkpoint's hyperparameters. The class saves the block as plain data (``asdict``), so its
    checkpoints load with ``weights_only``.

    A subclass declares the range of each numeric field in ``RANGES`` (:class:`common.validation.Range`);
    a value outside it is a :class:`common.validation.SettingError` when the block is built.
    """

    RANGES: ClassVar[dict[str, Range]] = {}

    def __post_init__(self) -> None:
        for name, spec in self.RANGES.items():
            spec.check(f"{type(self).__name__}.{name}", getattr(self, name))

    @classmethod
    def of(cls, value: Self | Mapping[str, Any] | None, default: Self | None = None) -> Self:
        """``value`` as settings: an instance as it is; a mapping's fields over ``default`` (the
        class defaults when None); None: ``default``.

        Raises:
            ValueError: naming an unknown field.

        Example:
            >>> @dataclass(frozen=True)
            ... class Plan(Settings):
            ...     horizon: int = 20
            ...     samples: int = 64
            >>> Plan.of({"samples": 8}, Plan(horizon=5))
            Plan(horizon=5, samples=8)
        """
        if isinstance(value, cls):
            return value
        given = dict(value or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected names in {names}")
        return replace(cls() if default is None else default, **given)
