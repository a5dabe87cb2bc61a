"""`load_dyna_checkpoint`: the dynamics model and APS policy of a main-job checkpoint, for the
methods and benchmarks that start from a trained GSSM+APS (test-time methods, probes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.checkpoints import load_checkpoint
from envs import TaskFamily, make_family
from modules.methods.gssm_aps.aps import APSModule
from modules.models.meta_dynamics_model import MetaDynamicsModel


@dataclass
class DynaCheckpoint:
    """What a main-job (``train.py fit`` with the Dyna loop) checkpoint holds for a test-time method.

    Attributes:
        model: the meta dynamics model with its normalisers, in eval mode.
        aps: the APS module (its ``policy`` and the hyperparameters it was trained with).
        family: the task family; data: the datamodule's hyperparameters (``num_train_tasks``, ``task_seed``).
        real_transitions: the real training transitions the run had collected.
    """

    model: MetaDynamicsModel
    aps: APSModule
    family: TaskFamily
    data: dict[str, Any]
    real_transitions: int


def load_dyna_checkpoint(path: str | Path, env: str | None = None) -> DynaCheckpoint:
    """Load a main-job checkpoint ``weights_only`` (tensors and plain data: one that needs pickled code
    is refused, not executed).

    The APS hyperparameters come from the checkpoint (``DynaLoop`` state ``aps_hparams``).

    Raises:
        ValueError: if the file holds no Dyna loop state (or one of a version before the current layout,
            without ``aps_hparams``), or was made for another env than ``env``.
    """
    ckpt = load_checkpoint(path)
    if "DynaLoop" not in ckpt.get("callbacks", {}):
        raise ValueError(f"{str(path)!r} holds no DynaLoop state; expected a checkpoint of the main job (train.py fit)")
    hp = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    if env is not None and hp["env"] != env:
        raise ValueError(f"checkpoint {str(path)!r} was made for env {hp['env']!r}, not {env!r}")
    model = MetaDynamicsModel(**hp)
    model.load_state_dict(ckpt["state_dict"])
    loop = ckpt["callbacks"]["DynaLoop"]
    if "aps_hparams" not in loop:
        raise ValueError(f"{str(path)!r} was written by a version before the current layout (no APS settings "
                         "in its Dyna loop state); such checkpoints do not load: retrain")  # fmt: skip
    aps = APSModule(**{k: v for k, v in loop["aps_hparams"].items() if k != "dynamics_checkpoint"})
    aps.load_state_dict(loop["aps"])
    data = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if not k.startswith("_")}
    return DynaCheckpoint(model.eval(), aps.eval(), make_family(hp["env"]), data, loop["real_transitions"])

