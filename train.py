"""mbmrl command line (LightningCLI): ``python train.py {fit,validate,test} --config conf/...yaml``.

The config names the LightningModule (``model.class_path``), the datamodule and, for the main job,
the Dyna loop (``dyna``), so one entry point runs every job:

    python train.py fit --config conf/acrobot.yaml                  # GSSM + APS, Dyna loop, meta-test
    python train.py test --config conf/acrobot.yaml --ckpt_path runs/acrobot/version_0/checkpoints/last.ckpt
    python train.py fit --config conf/model/acrobot.yaml            # model only
    python train.py fit --config conf/model/acrobot.yaml --model.variant mlsm_v0
    python train.py fit --config conf/policy/acrobot.yaml --model.dynamics_checkpoint <ckpt>  # APS only
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from callbacks import DynaLoop
from common.atomic_checkpoint_io import AtomicCheckpointIO
from common.checkpoints import CheckpointError, load_checkpoint
from common.validation import LIGHTNING_RANGES, TOP_LEVEL_RANGES, Range, SettingError, check_config, class_ranges

LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
# settings said once: each source sets its targets (parser.link_arguments)
LINKS = {
    "env": ("model.init_args.env", "data.init_args.env", "trainer.logger.init_args.name"),
    "seed_everything": ("model.init_args.seed", "data.init_args.seed", "dyna.init_args.seed"),
}
ROOT = Path(__file__).resolve().parent
# the class a nested key of a jsonargparse error belongs to: a group's class_path, or the class a callable builds
OWNER = re.compile(r"class_path '([\w.]+)'|Callable\[\[[^\]]*\], ([\w.]+)\] expects")


class _DropLightningTips(logging.Filter):
    """Lightning advertises cloud products in 'Tip' banners; our users need none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


class MbmrlCLI(LightningCLI):
    """``LightningCLI`` plus composed configs and what shared and resumed runs need.

    Configs compose (:func:`expand_bases`): a file's ``base: <file>`` puts that file's ``--config``
    before its own, so ``conf/acrobot.yaml`` is ``conf/gssm_aps.yaml`` plus the family's few lines.
    ``env`` and ``seed_everything`` are said once (``parser.link_arguments``): ``env`` sets
    ``model.env``, ``data.env`` and the logger's ``name``; ``seed_everything`` sets ``model.seed``,
    ``data.seed`` and ``dyna.seed``. The Dyna loop is its own optional group, ``dyna``
    (:class:`callbacks.DynaLoop`, added to the trainer's callbacks), so a thin file overrides one of
    its settings without repeating the callback list.

    Checked right after parsing:

    - every numeric setting against its declared range (:func:`common.validation.check_config`), and
      a value of the wrong type: one ``error: <setting>: <value> — expected …`` line before anything
      is built or written;
    - every checkpoint is read with ``weights_only=True``; an explicit ``--ckpt_path`` is loaded
      first (:func:`common.checkpoints.load_checkpoint`), so a missing, truncated or code-carrying
      file is a one-line error naming it;
    - ``fit --ckpt_path <run folder>/checkpoints/<file>.ckpt`` continues in that run folder when the
      config names no logger ``version``: TensorBoard shows one run whose curves go on from the
      checkpoint's step (what the interrupted process logged after it is purged) and
      ``metatest_history.jsonl`` is appended to.
    """

    _resume_from: tuple[Path, int] | None = None  # (checkpoint, its global step) of a `fit --ckpt_path`

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--env", type=str, required=True, help="task family (acrobot, cartpole_swingup, ...)")
        parser.add_argument("--base", type=str | None, default=None,
                            help="a config this one builds on (read by the --config that names it)")  # fmt: skip
        parser.add_lightning_class_args(DynaLoop, "dyna", subclass_mode=True, required=False)
        # the targets are computed from `env` and `seed_everything`; check_linked_settings refuses them
        for source, targets in LINKS.items():
            for target in targets:
                parser.link_arguments(source, target)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse (each config's bases first), then check ``--ckpt_path`` before Lightning reads
        hyperparameters from it."""
        if isinstance(args, (dict, Namespace)):
            super().parse_arguments(parser, args)
        else:
            try:
                args = expand_bases(sys.argv[1:] if args is None else list(args))
                check_linked_settings(args)
            except ValueError as err:
                raise SystemExit(f"error: {err}") from None
            # a wrong type is one line (type_error_message), not the parser's dump; a subcommand's parser
            # copied exit_on_error when it was added, so each is switched
            parsers = [parser, *getattr(self, "_subcommand_parsers", {}).values()]  # none with run=False
            for each in parsers:
                each.exit_on_error = False
            try:
                self.config = parser.parse_args(args)
            except ArgumentError as err:
                if (message := type_error_message(str(err))) is None:
                    for each in parsers:
                        each.exit_on_error = True
                    parser.error(str(err))
                raise SystemExit(f"error: {message}") from None
            finally:
                for each in parsers:
                    each.exit_on_error = True
        subcommand = self.config.get("subcommand")
        config = self.config if subcommand is None else self.config[subcommand]
        try:
            check_config(config.as_dict())
        except SettingError as err:
            raise SystemExit(f"error: {err}") from None
        if subcommand is None:
            return
        if config.get("weights_only") is False:
            raise ValueError("--weights_only false: mbmrl loads checkpoints as tensors and plain data only (true)")
        config.weights_only = True
        path = config.get("ckpt_path")
        if path is None:
            return
        if subcommand == "fit":  # a resume writes into its run folder's checkpoints/ on purpose
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        if path == "last":  # the requeue idiom (docs/OPERATIONS.md): the first start has no checkpoint yet, as expected
            warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last checkpoint')
        if path in LIGHTNING_CKPT_KEYWORDS:
            return
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:  # the message names the file and what is wrong
            raise SystemExit(f"error: {err}") from None
        if subcommand == "fit":
            self._resume_from = (Path(path), ckpt.get("global_step", 0))

    def before_instantiate_classes(self) -> None:
        """Point the logger at the resumed run's folder: here, after Lightning has re-parsed the config
        with the checkpoint's hyperparameters (which re-applies the ``env`` → logger name link)."""
        if self._resume_from is not None:
            continue_run_folder(self.config[self.config["subcommand"]].trainer, *self._resume_from)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The trainer, with the ``dyna`` loop among its callbacks where the config has one, atomic
        checkpoint writes and, unless the config says, a progress bar only on a terminal."""
        extra = [c for key in self._parser(self.subcommand).callback_keys if (c := self._get(self.config_init, key))]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        config["plugins"] = with_atomic_checkpoints(config.get("plugins"))
        if config.get("enable_progress_bar") is None:  # a log file gets no bar refreshes (docs/OPERATIONS.md)
            config["enable_progress_bar"] = sys.stdout.isatty()
        return self._instantiate_trainer(config, extra)

    def instantiate_classes(self) -> None:
        """Build the classes; a bad value our code rejects is one ``error:`` line, not a traceback."""
        try:
            super().instantiate_classes()
        except Exception as err:
            message = user_error_message(err)
            if message is None:
                raise
            raise SystemExit(f"error: {message}") from None

    # LightningCLI runs ``self.<subcommand>`` when it exists instead of ``trainer.<subcommand>``.
    def fit(self, **kwargs: Any) -> None:
        self._run_guarded(self.trainer.fit, kwargs)

    def validate(self, **kwargs: Any) -> None:
        self._run_guarded(self.trainer.validate, kwargs)

    def test(self, **kwargs: Any) -> None:
        self._run_guarded(self.trainer.test, kwargs)

    def _run_guarded(self, run: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        """A start that fails before the first training step (a bad value found in ``setup``, an
        unknown task name) removes the run folder it created and ends with one line, not a traceback."""
        created = first_missing_folder(Path(self.trainer.log_dir)) if self.trainer.log_dir else None
        try:
            run(**kwargs)
        except Exception as err:
            if self.trainer.global_step > 0:
                raise
            if created is not None and not any(created.rglob("*.ckpt")):
                shutil.rmtree(created, ignore_errors=True)
            message = user_error_message(err)
            if message is None:
                raise
            raise SystemExit(f"error: {message}") from None


def expand_bases(args: list[str]) -> list[str]:
    """``args`` with every ``--config FILE`` (or ``-c``, ``--config=``) preceded by the configs its
    ``base:`` chain names (a relative base is read beside the file), so later files override earlier
    ones, and followed by ``--base=null``.

    Raises:
        ValueError: for a base that does not exist or a chain that names a file twice.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            path, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            path, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        chain = [Path(path)]
        while (base := _base_of(chain[0])) is not None:
            if base.resolve() in [c.resolve() for c in chain]:
                raise ValueError(f"config {chain[0]} has base {base}, which is already in its chain {chain}")
            if not base.is_file():
                raise ValueError(f"config {chain[0]} names base {base}, which does not exist")
            chain.insert(0, base)
        for file in chain:
            out += ["--config", str(file)]
        out.append("--base=null")  # read already: the composed config (printed, saved) names no base
    return out


def check_linked_settings(args: list[str]) -> None:
    """Refuse a setting that ``env`` or ``seed_everything`` sets, given on the command line or in a
    ``--config`` file (jsonargparse would drop it without a word), naming it and what to give instead;
    and a ``seed_everything`` of ``true``/``false``. ``args`` as :func:`expand_bases` returns them.

    Raises:
        ValueError: naming the setting, where it was given, and its source.
    """
    linked = {target.replace(".init_args", ""): source for source, targets in LINKS.items() for target in targets}
    seed = None  # the last one given wins; Lightning draws a seed for `true` after the links passed `true` on
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
            content = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
            for key, source in linked.items():
                if _setting(content, key) is not None:
                    raise ValueError(f"{path} sets {key}, which `{source}` sets: remove it and give `{source}` once")
            if isinstance(content, dict) and "seed_everything" in content:
                seed = str(content["seed_everything"])
            continue
        key = arg[2:].split("=", 1)[0].replace(".init_args", "")
        if arg.startswith("--") and key in linked:
            raise ValueError(f"--{key} is set by --{linked[key]}; give --{linked[key]} instead")
        if arg.startswith("--seed_everything"):
            seed = arg.split("=", 1)[1] if "=" in arg else args[i + 1] if i + 1 < len(args) else ""
    if seed is not None and seed.lower() in ("true", "false"):
        raise ValueError(f"seed_everything={seed}; give an integer (it sets every seed of the run)")


def type_error_message(message: str) -> str | None:
    """jsonargparse's error for a value of the wrong type as one line, ``<setting>: <value> — expected
    …``: the setting by its config path, what is expected from its declared range; None for another
    error (an unknown name), which keeps the parser's own message."""
    keys = list(re.finditer(r'Parser key "([^"]+)"', message))
    given = re.search(r"(?:Got|Given) value: (.*?)(?:\. Got value:|\n|$)", message[keys[-1].end():]) if keys else None
    if given is None or "is not accepted" in message:
        return None
    path = keys[0].group(1)
    spec = LIGHTNING_RANGES["trainer"].get(path.removeprefix("trainer.")) if path.startswith("trainer.") \
        else TOP_LEVEL_RANGES.get(path)  # fmt: skip
    for before, key in itertools.pairwise(keys):
        owners = OWNER.findall(message[before.end() : key.start()])
        owner = "".join(owners[-1]) if owners else ""
        block = owner.endswith("Settings")  # a settings block is given as its fields, without init_args
        path += f".{key.group(1)}" if block else f".init_args.{key.group(1)}"
        spec = class_ranges(owner).get(key.group(1)) if owner else None
    if isinstance(spec, Range):
        expected = spec.describe()
    else:
        types = re.findall(r"Expected a <class '(\w+)'>", message)
        expected = f"a value of type {types[-1]}" if types else "a value of its type"
    return f"{path}: {given.group(1)} — expected {expected}"


def _setting(content: Any, key: str) -> Any:
    """The value of ``key`` (``model.env``) in a parsed config, looked up in ``init_args`` where a
    group has them; None where absent."""
    node = content
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part, (node.get("init_args") or {}).get(part))
    return node


def compose_config(*paths: str | Path) -> dict[str, Any]:
    """The configs ``paths`` (each after its ``base:`` chain) merged into one dict, as several
    ``--config`` are: nested mappings merged key by key, any other value replaced; ``base`` dropped.
    For scripts that edit a config and run ``train.py`` on the result.

    Example:
        >>> compose_config("conf/cartpole_swingup.yaml")["dyna"]["init_args"]["policy"]["init_args"]["ppo"]["lr"]
        0.001
    """
    merged: dict[str, Any] = {}
    args = expand_bases([arg for path in paths for arg in ("--config", str(path))])
    for path in [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]:
        merged = merge_config(merged, yaml.safe_load(Path(path).read_text()) or {})
    merged.pop("base", None)
    return merged


def merge_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s leaves written over it (nested dicts merged, a copy)."""
    out = dict(base)
    for key, value in extra.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_config(out[key], value) if nested else value
    return out


def _base_of(path: Path) -> Path | None:
    """The ``base:`` a YAML config names (relative to the file), or None."""
    if not path.is_file():
        return None  # jsonargparse reports the missing file
    content = yaml.safe_load(path.read_text())
    base = content.get("base") if isinstance(content, dict) else None
    return None if base is None else path.parent / base


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """``plugins`` (a Trainer's, None, one or a list) with :class:`AtomicCheckpointIO` added unless
    one of them is a ``CheckpointIO`` already."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
    return plugins if any(isinstance(p, CheckpointIO) for p in plugins) else [*plugins, AtomicCheckpointIO()]


def first_missing_folder(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what a run would create), or None."""
    path = path.resolve()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def user_error_message(err: BaseException) -> str | None:
    """The message of a bad-input error: the ``ValueError`` / ``TypeError`` our code raised (found
    under jsonargparse's wrappers, whose namespace dump the user does not need); None for anything
    else, which keeps its traceback."""
    root = err
    while (inner := root.__cause__ or root.__context__) is not None:
        root = inner
    frames = traceback.extract_tb(root.__traceback__)
    where = Path(frames[-1].filename).resolve() if frames else None
    ours = where is not None and where.is_relative_to(ROOT) and "site-packages" not in where.parts
    return str(root) if isinstance(root, (ValueError, TypeError)) and ours else None


def continue_run_folder(trainer: Namespace, ckpt_path: Path, global_step: int) -> None:
    """Point a ``TensorBoardLogger`` without a fixed ``version`` at the run folder holding ``ckpt_path``
    (``<save_dir>/<name>/<version>/checkpoints/*.ckpt`` with the ``hparams.yaml`` Lightning writes);
    ``purge_step`` makes TensorBoard drop the events an interrupted process wrote after the checkpoint."""
    run_dir = ckpt_path.resolve().parent.parent
    logger = trainer.get("logger")
    if ckpt_path.resolve().parent.name != "checkpoints" or not (run_dir / "hparams.yaml").is_file():
        return
    if not isinstance(logger, Namespace) or not str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        return
    args = logger.init_args
    if args.get("version") is not None:
        return
    args.save_dir, args.name, args.version = str(run_dir.parent.parent), run_dir.parent.name, run_dir.name
    args.purge_step = global_step


def quiet_lightning_notes() -> None:
    """Filter Lightning's warnings and tips that say nothing about the user's run (each filter says why)."""
    # Lightning 2.6 still builds torch's deprecated pytree LeafSpec: harmless, not ours to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The Dyna loop and the meta-test log global values (gathered, already reduced, or rank 0's
    # meta-test) with rank_zero_only; Lightning's advice to sync them again is moot.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(policy|real|metatest|time|dyna)/")
    # The model's evaluation scores are torchmetrics whose compute() all-reduces: already global.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('model/(val|test)")
    # Batches (context/target sets, PPO minibatch indices) are drawn by tensor indexing in-process
    # (num_workers=0), so Lightning's advice on worker processes and IterableDataset lengths does not apply.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLightningTips())


def main(args: list[str] | None = None) -> LightningCLI:
    quiet_lightning_notes()
    return MbmrlCLI(
        pl.LightningModule,
        None,  # any LightningDataModule, optional: the APS-only job brings its own data
        subclass_mode_model=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
