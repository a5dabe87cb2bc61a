"""`load_dyna_checkpoint`: the dynamics model and APS policy of a main-job checkpoint, for the
methods and benchmarks that start from a trained GSSM+APS (test-time methods, probes)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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

    The APS hyperparameters come from the checkpoint (``DynaLoop`` state ``aps_hparams``); checkpoints
    written before they were saved there take them from the run's ``config.yaml`` beside
    ``checkpoints/`` (the action-std floor, for one, is not in the weights), and the policy's width
    from its weights.

    Raises:
        ValueError: if the file holds no Dyna loop state, or was made for another env than ``env``.
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
    aps_hp = loop.get("aps_hparams")
    if aps_hp is None:
        hidden = loop["aps"]["policy.actor.0.weight"].shape[0]
        aps_hp = {**saved_policy_kwargs(path), "hidden_dim": hidden, "env": hp["env"], "latent_dim": hp["latent_dim"]}
    aps = APSModule(**{k: v for k, v in aps_hp.items() if k != "dynamics_checkpoint"})
    aps.load_state_dict(loop["aps"])
    data = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if not k.startswith("_")}
    return DynaCheckpoint(model.eval(), aps.eval(), make_family(hp["env"]), data, loop["real_transitions"])


def saved_policy_kwargs(path: str | Path) -> dict[str, Any]:
    """The DynaLoop's ``policy`` arguments from the run's ``config.yaml`` beside ``checkpoints/``;
    empty when there is none."""
    config = Path(path).resolve().parents[1] / "config.yaml"
    if not config.exists():
        return {}
    saved = yaml.safe_load(config.read_text())
    callbacks = (saved.get("trainer") or {}).get("callbacks") or []  # runs before the `dyna` group: a callback
    dyna = [saved["dyna"]] if saved.get("dyna") else [
        c for c in callbacks if isinstance(c, dict) and str(c.get("class_path", "")).endswith("DynaLoop")
    ]
    policy = dict((dyna[0].get("init_args") or {}).get("policy") or {}) if dyna else {}
    if "class_path" in policy:  # {class_path: modules.APSModule, init_args}; older runs: a flat dict
        policy = policy.get("init_args") or {}
    accepted = inspect.signature(APSModule).parameters  # older runs' flat PPO keys play no part here
    return {k: v for k, v in policy.items() if k in accepted and k not in ("env", "latent_dim", "seed")}
