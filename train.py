"""mbmrl command line (LightningCLI): ``python train.py {fit,validate,test} --config conf/...yaml``.

The config names the LightningModule (``model.class_path``) and the datamodule, so one entry
point runs every job:

    python train.py fit --config conf/acrobot.yaml                  # GSSM + APS, Dyna loop, meta-test
    python train.py test --config conf/acrobot.yaml --ckpt_path runs/acrobot/version_0/checkpoints/last.ckpt
    python train.py fit --config conf/model/acrobot.yaml            # model only
    python train.py fit --config conf/model/acrobot.yaml --model.variant mlsm_v0
    python train.py fit --config conf/policy/acrobot.yaml --model.dynamics_checkpoint <ckpt>  # APS only
"""

from __future__ import annotations

import logging
import shutil
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from modules.checkpoints import CheckpointError, load_checkpoint

LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
ROOT = Path(__file__).resolve().parent


class _DropLightningTips(logging.Filter):
    """Lightning advertises cloud products in 'Tip' banners; our users need none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


class MbmrlCLI(LightningCLI):
    """``LightningCLI`` plus what shared and resumed runs need (checked right after parsing):

    - every checkpoint is read with ``weights_only=True``; an explicit ``--ckpt_path`` is loaded
      first (:func:`modules.checkpoints.load_checkpoint`), so a missing, truncated or code-carrying
      file is a one-line error naming it;
    - ``fit --ckpt_path <run folder>/checkpoints/<file>.ckpt`` continues in that run folder when the
      config names no logger ``version``: TensorBoard shows one run whose curves go on from the
      checkpoint's step (what the interrupted process logged after it is purged) and
      ``metatest_history.jsonl`` is appended to.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check ``--ckpt_path`` before Lightning reads hyperparameters from it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        config = self.config[subcommand]
        if config.get("weights_only") is False:
            raise ValueError("--weights_only false: mbmrl loads checkpoints as tensors and plain data only (true)")
        config.weights_only = True
        path = config.get("ckpt_path")
        if path is None:
            return
        if subcommand == "fit":  # a resume writes into its run folder's checkpoints/ on purpose
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        if path == "last":  # the requeue idiom (README): the first start has no checkpoint yet, as expected
            warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last checkpoint')
        if path in LIGHTNING_CKPT_KEYWORDS:
            return
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:  # the message names the file and what is wrong
            raise SystemExit(f"error: {err}") from None
        if subcommand == "fit":
            continue_run_folder(config.trainer, Path(path), ckpt.get("global_step", 0))


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


def main(args: list[str] | None = None) -> LightningCLI:
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
