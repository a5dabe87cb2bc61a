"""mbmrl command line (LightningCLI): ``python train.py {fit,validate,test} --config conf/...yaml``.

Example:
    python train.py fit --config conf/model/acrobot.yaml
    python train.py fit --config conf/model/acrobot.yaml --model.variant mlsm_v0
    python train.py test --config conf/model/acrobot.yaml --ckpt_path last
"""

from __future__ import annotations

import logging
import warnings

from pytorch_lightning.cli import LightningCLI

from datamodules import TransitionDataModule
from modules import MetaDynamicsModel


class _DropLightningTips(logging.Filter):
    """Lightning advertises cloud products in 'Tip' banners; our users need none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


class MbmrlCLI(LightningCLI):
    """LightningCLI with the env name given once (``data.env``) and shared by the model."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.env", "model.env")


def main(args: list[str] | None = None) -> MbmrlCLI:
    # Lightning 2.6 still builds torch's deprecated pytree LeafSpec: harmless, not ours to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLightningTips())
    return MbmrlCLI(
        MetaDynamicsModel,
        TransitionDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
