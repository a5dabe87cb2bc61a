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
import warnings

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI


class _DropLightningTips(logging.Filter):
    """Lightning advertises cloud products in 'Tip' banners; our users need none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def main(args: list[str] | None = None) -> LightningCLI:
    # Lightning 2.6 still builds torch's deprecated pytree LeafSpec: harmless, not ours to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLightningTips())
    return LightningCLI(
        pl.LightningModule,
        None,  # any LightningDataModule, optional: the APS-only job brings its own data
        subclass_mode_model=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
