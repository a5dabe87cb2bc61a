"""Settings checks that name the bad value and what was expected.

Every numeric setting has a :class:`Range`, declared once by the class that takes it (its ``RANGES``;
Lightning's own settings in :data:`LIGHTNING_RANGES`). The class checks its arguments against it
(:func:`check_settings`, a :class:`common.settings.Settings` block in ``__post_init__``), and
``train.py`` checks a whole parsed config before it builds anything (:func:`check_config`), so a bad
value ends the start with one line naming the setting by its config path.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingError(ValueError):
    """A setting outside its range; the message is ``<name>: <value> — expected …``."""


@dataclass(frozen=True)
class Range:
    """The values one numeric setting takes: finite numbers (``integer``: whole ones) between ``low``
    and ``high`` (None: unbounded; ``open_low``/``open_high``: the bound excluded), plus ``special``
    values with a meaning of their own (inside the interval, such as ``0: "no floor"``, or outside,
    such as Lightning's ``-1: "no limit"``), ``None`` where ``none`` says what it means, and the
    strings in ``words``. NaN, inf, booleans and other strings are always refused.

    Example:
        >>> Range(low=0, special={0: "no floor"}).check("min_action_std", -1)
        Traceback (most recent call last):
        ...
        common.validation.SettingError: min_action_std: -1 — expected a number ≥ 0 (0: no floor)
    """

    low: float | None = None
    high: float | None = None
    integer: bool = False
    open_low: bool = False
    open_high: bool = False
    special: Mapping[float, str] = field(default_factory=dict)
    none: str | None = None
    words: tuple[str, ...] = ()
    lists: bool = False  # a list of integers ≥ 0 is accepted too (Lightning's device indices)

    def admits(self, value: Any) -> bool:
        """Whether ``value`` is one of the values described."""
        if value is None:
            return self.none is not None
        if isinstance(value, str):  # Lightning's devices also come as "2" or "0,1" from a command line
            numeric = self.lists and all(part.strip().isdigit() for part in value.split(","))
            return value in self.words or (numeric and self.admits(int(value) if value.isdigit() else [0]))
        if isinstance(value, list):
            return self.lists and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if value in self.special:
            return True
        if self.integer and value != int(value):
            return False
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        above = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        return not (below or above)

    def describe(self) -> str:
        """What is expected, in words: ``an integer ≥ 1, or -1 (no limit)``."""
        kind = "an integer" if self.integer else "a number"
        low = None if self.low is None else f"{'>' if self.open_low else '≥'} {_number(self.low)}"
        high = None if self.high is None else f"{'<' if self.open_high else '≤'} {_number(self.high)}"
        if low and high:
            text = f"{kind} in {'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}" \
                   f"{')' if self.open_high else ']'}"  # fmt: skip
        else:
            text = " ".join(p for p in (kind, low or high) if p)
        inside = {v: m for v, m in self.special.items() if self._in_interval(v)}
        extra = [f"{_number(v)} ({m})" for v, m in self.special.items() if v not in inside]
        extra += [f"null ({self.none})"] if self.none is not None else []
        extra += [repr(w) for w in self.words]
        text += "".join(f", or {e}" for e in extra)
        return text + (" (" + "; ".join(f"{_number(v)}: {m}" for v, m in inside.items()) + ")" if inside else "")

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`SettingError` naming ``name`` unless :meth:`admits` ``value``."""
        if not self.admits(value):
            raise SettingError(f"{name}: {value} — expected {self.describe()}")

    def _in_interval(self, value: float) -> bool:
        return Range(self.low, self.high, self.integer, self.open_low, self.open_high).admits(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


INTEGER_1 = Range(low=1, integer=True)  # a count, a size, a number of steps
POSITIVE = Range(low=0, open_low=True)  # a learning rate, a clip, a std
NUMBER = Range()  # any finite number (an initial log-std)
SEED = Range(low=0, high=2**64 - 1, integer=True)  # what torch.Generator.manual_seed takes (derived seeds are 64-bit)
LIGHTNING_SEED = Range(low=0, high=2**32 - 1, integer=True)  # what seed_everything takes (numpy's seeds are 32-bit)
DISCOUNT = Range(low=0, high=1, open_low=True)
EVERY_TASK = Range(low=1, integer=True, none="every task")


def weight(off: str) -> Range:
    """A loss weight ≥ 0 whose 0 switches its term off (``off`` says what is then left out)."""
    return Range(low=0, special={0: off})


def check_settings(owner: type, values: Mapping[str, Any]) -> None:
    """Check the ``values`` (an ``__init__``'s ``locals()``) that ``owner.RANGES`` declares a
    :class:`Range` for; a :class:`common.settings.Settings` block there checks itself when built.

    Raises:
        SettingError: ``<owner>.<name>: <value> — expected …`` for the first value outside its range.
    """
    for name, spec in owner.RANGES.items():
        if isinstance(spec, Range):
            spec.check(f"{owner.__name__}.{name}", values[name])


# Lightning's settings that the shipped configs give (or that are easily given wrong), declared here
# because Lightning's own checks end in a traceback from inside it, or, like max_epochs=-1, not at all.
LIGHTNING_RANGES: dict[str, dict[str, Range]] = {
    "trainer": {
        "devices": Range(low=1, integer=True, words=("auto",), lists=True),
        "num_nodes": INTEGER_1,
        "max_epochs": Range(low=1, integer=True, special={-1: "no limit"}, none="1000, or no limit with max_steps"),
        "min_epochs": Range(low=0, integer=True, none="none"),
        "max_steps": Range(low=1, integer=True, special={-1: "no limit"}),
        "min_steps": Range(low=0, integer=True, none="none"),
        "overfit_batches": Range(low=0, special={0: "off"}),
        "limit_train_batches": Range(low=0, none="every batch"),
        "limit_val_batches": Range(low=0, special={0: "no validation"}, none="every batch"),
        "limit_test_batches": Range(low=0, none="every batch"),
        "num_sanity_val_steps": Range(low=0, integer=True, special={0: "none", -1: "every batch"}, none="2"),
        "check_val_every_n_epoch": Range(low=1, integer=True, none="only by val_check_interval"),
        "log_every_n_steps": Range(low=1, integer=True, none="50"),
        "accumulate_grad_batches": INTEGER_1,
        "gradient_clip_val": Range(low=0, special={0: "no clipping"}, none="no clipping"),
        "reload_dataloaders_every_n_epochs": Range(low=0, integer=True, special={0: "never"}),
    },
    "TensorBoardLogger": {
        "max_queue": INTEGER_1,
        "flush_secs": POSITIVE,
        "purge_step": Range(low=0, integer=True, none="nothing purged"),
    },
    "ModelCheckpoint": {
        "save_top_k": Range(low=-1, integer=True, special={-1: "every checkpoint", 0: "none (but last)"}),
        "every_n_train_steps": Range(low=0, integer=True, special={0: "off"}, none="off"),
        "every_n_epochs": Range(low=0, integer=True, special={0: "off"}, none="every epoch"),
    },
}
TOP_LEVEL_RANGES = {"seed_everything": LIGHTNING_SEED}


def setting_ranges(config: Mapping[str, Any]) -> dict[str, tuple[Range, Any]]:
    """Every setting of a parsed config (a dict, as ``Namespace.as_dict()`` gives) that has a declared
    range, by its config path (``dyna.init_args.policy.init_args.horizon``,
    ``trainer.callbacks.1.init_args.patience``), with its value. A group's ranges are its class's
    ``RANGES`` (a :class:`common.settings.Settings` block in them: that class's ``RANGES``) or
    Lightning's (:data:`LIGHTNING_RANGES`)."""
    found: dict[str, tuple[Range, Any]] = {}
    for name, spec in TOP_LEVEL_RANGES.items():
        if name in config:
            found[name] = (spec, config[name])
    trainer = config.get("trainer") or {}
    _collect(found, "trainer", LIGHTNING_RANGES["trainer"], trainer)
    for key, node in config.items():
        if isinstance(node, dict) and "class_path" in node:
            _collect_group(found, key, node)
    return found


def class_ranges(class_path: str) -> Mapping[str, Any]:
    """The declared ranges of the class ``class_path`` names (``modules.APSModule``): its ``RANGES``,
    or Lightning's; empty for a class that declares none or cannot be imported."""
    module, _, name = class_path.rpartition(".")
    if name in LIGHTNING_RANGES:
        return LIGHTNING_RANGES[name]
    try:
        return getattr(getattr(importlib.import_module(module), name), "RANGES", {})
    except (ImportError, AttributeError, ValueError):
        return {}  # jsonargparse refuses an unknown class itself


def _collect_group(found: dict[str, tuple[Range, Any]], path: str, node: Mapping[str, Any]) -> None:
    _collect(found, f"{path}.init_args", class_ranges(str(node["class_path"])), node.get("init_args") or {})


def _collect(found: dict[str, tuple[Range, Any]], path: str, ranges: Mapping[str, Any], values: Mapping) -> None:
    for key, value in values.items():
        where, spec = f"{path}.{key}", ranges.get(key)
        if isinstance(value, dict) and "class_path" in value:
            _collect_group(found, where, value)
        elif isinstance(value, list) and all(isinstance(v, dict) and "class_path" in v for v in value):
            for i, item in enumerate(value):
                _collect_group(found, f"{where}.{i}", item)
        elif isinstance(spec, Range):
            found[where] = (spec, value)
        elif isinstance(spec, type) and isinstance(value, dict):  # a Settings block, given as its fields
            _collect(found, where, spec.RANGES, value)


def check_config(config: Mapping[str, Any]) -> None:
    """Check every declared setting of a parsed config (see :func:`setting_ranges`), and that a Dyna
    loop has a bounded number of iterations.

    Raises:
        SettingError: ``<config path>: <value> — expected …`` for the first value outside its range.
    """
    for path, (spec, value) in setting_ranges(config).items():
        spec.check(path, value)
    if config.get("dyna") is not None:
        require_bounded_epochs((config.get("trainer") or {}).get("max_epochs"))


def require_bounded_epochs(max_epochs: int | None) -> None:
    """The Dyna loop runs one iteration per epoch: Lightning's unbounded ``max_epochs`` (-1, or None,
    1000) would run it without end or for days.

    Raises:
        SettingError: naming ``trainer.max_epochs``.
    """
    if max_epochs is None or max_epochs < 1:
        raise SettingError(f"trainer.max_epochs: {max_epochs} — expected an integer ≥ 1 with the Dyna loop "
                           "(one iteration per epoch)")  # fmt: skip
