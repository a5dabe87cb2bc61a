"""The method contract: a method class with no arguments is the algorithm its shipped acrobot config runs,
no config repeats a default, settings come as blocks, and the collection schedule is one global round
robin whatever the number of ranks (in-process, no training)."""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from cli_runner import ROOT

import train
from callbacks import DynaLoop, HeldOutEarlyStopping, NormalizerFitting, TaskLatentLogger
from common.settings import Settings
from datamodules import TransitionDataModule
from datamodules.sharding import rank_share
from modules import L2A, MDPILCO, APSModule, GSSMTestTimeMethod, MetaDynamicsModel, ModelFreePPO
from modules.methods.settings import MetaTestSettings

# the acrobot config of each method and the arguments it gives its class (all else is the class default)
ACROBOT = {
    "acrobot_dr_ppo": (ModelFreePPO, {}),
    "acrobot_pe_ppo": (ModelFreePPO, {"method": "pe_ppo"}),
    "acrobot_l2a": (L2A, {}),
    "acrobot_m_dpilco": (MDPILCO, {}),
    "acrobot_gssm_mpc": (GSSMTestTimeMethod, {}),
    "acrobot_gssm_nonamortized": (GSSMTestTimeMethod, {"method": "gssm_nonamortized", "metatest": {"episodes": 50}}),
}
CHECKPOINT = {GSSMTestTimeMethod: ["--model.checkpoint", "main.ckpt"]}  # given on the command line, never loaded here


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """LightningCLI reads ``args``; pytest's own command line is not for it."""
    monkeypatch.setattr(sys, "argv", ["train.py"])


@pytest.mark.parametrize("name", ACROBOT)
def test_a_method_class_without_arguments_is_its_shipped_acrobot_algorithm(name, tmp_path):
    cls, given = ACROBOT[name]
    path = ROOT / f"conf/baselines/{name}.yaml"
    assert train.compose_config(path)["model"].get("init_args", {}) == given  # the config says nothing more
    cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                         args=["--config", str(path), *CHECKPOINT.get(cls, []),
                               "--trainer.logger.init_args.save_dir", str(tmp_path)])  # fmt: skip
    checkpoint = {"checkpoint": "main.ckpt"} if cls in CHECKPOINT else {}
    expected = dict(cls(**given, **checkpoint).hparams)
    built = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}  # not the CLI's _class_path
    assert type(cli.model) is cls and built == expected


def test_the_classes_without_arguments_are_the_shipped_gssm_aps_of_acrobot(tmp_path):
    """conf/acrobot.yaml over conf/gssm_aps.yaml names the classes and gives none of them an argument."""
    path = ROOT / "conf/acrobot.yaml"
    composed = train.compose_config(path)
    assert [composed[group].get("init_args", {}) for group in ("model", "data")] == [{}, {}]
    assert composed["dyna"]["init_args"] == {"policy": {"class_path": "modules.APSModule"}}
    ours = [c for c in composed["trainer"]["callbacks"] if c["class_path"].startswith("callbacks.")]
    assert all("init_args" not in c for c in ours)
    cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                         args=["--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path)])
    public = lambda hparams: {k: v for k, v in hparams.items() if not k.startswith("_")}  # noqa: E731
    assert public(cli.model.hparams) == dict(MetaDynamicsModel(env="acrobot").hparams)
    assert public(cli.datamodule.hparams) == dict(TransitionDataModule(env="acrobot").hparams)
    ours = [c for c in cli.trainer.callbacks if type(c).__module__.startswith("callbacks.")]  # built
    assert [type(c) for c in ours] == [NormalizerFitting, HeldOutEarlyStopping, TaskLatentLogger, DynaLoop]
    loop = ours.pop()
    settings = [name for name in inspect.signature(DynaLoop).parameters if name != "policy"]
    assert {k: getattr(loop, k) for k in settings} == {k: getattr(DynaLoop(), k) for k in settings}
    assert dict(loop.make_policy("acrobot", 8, 50, seed=0).hparams) == dict(APSModule("acrobot", 8, 50).hparams)
    assert all(vars(c) == vars(type(c)()) for c in ours)


def class_defaults(cls: type) -> dict:
    """``cls.__init__``'s defaults, a settings block as its fields."""
    return {name: asdict(p.default) if isinstance(p.default, Settings) else p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}  # fmt: skip


def class_of(class_path: str) -> type:
    package, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(package), name)


def repeats(given: dict, before: dict, where: str) -> list[str]:
    """The settings of ``given`` equal to what they are without it (``before``), a block field by field."""
    out = []
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(before.get(key), dict):
            out += repeats(value, before[key], f"{where}.{key}")
        elif key in before and value == before[key]:
            out.append(f"{where}.{key}: {value!r}")
    return out


def class_repeats(own: dict, base: dict, composed: dict, where: str) -> list[str]:
    """The init arguments of the class spec ``own`` (``{class_path, init_args}``) equal to its base's or to
    the class defaults, and so on into a class spec it holds (the Dyna loop's policy)."""
    if composed.get("class_path") is None:
        return []
    own_args, base_args = own.get("init_args") or {}, base.get("init_args") or {}
    composed_args = composed.get("init_args") or {}
    nested = {key for key, value in own_args.items() if isinstance(value, dict) and "class_path" in composed_args[key]}
    before = {**class_defaults(class_of(composed["class_path"])), **base_args}
    found = repeats({k: v for k, v in own_args.items() if k not in nested}, before, f"{where}.init_args")
    for key in nested:
        found += class_repeats(own_args[key], base_args.get(key) or {}, composed_args[key], f"{where}.init_args.{key}")
    return found


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in (ROOT / "conf").rglob("*.yaml")), ids=str)
def test_no_config_repeats_what_its_base_or_the_class_default_says(path: Path):
    own = yaml.safe_load((ROOT / path).read_text()) or {}
    composed = train.compose_config(ROOT / path)
    base = train.compose_config(ROOT / path.parent / own["base"]) if own.get("base") else {}
    found = []
    for group in ("model", "data", "dyna"):
        found += class_repeats(own.get(group) or {}, base.get(group) or {}, composed.get(group) or {}, group)
    for i, callback in enumerate((own.get("trainer") or {}).get("callbacks") or []):  # a list: replaced, not merged
        found += repeats(callback.get("init_args") or {}, class_defaults(class_of(callback["class_path"])),
                         f"trainer.callbacks[{i}].init_args")  # fmt: skip
    assert not found, f"{path} repeats {found}"


def test_a_block_given_in_part_keeps_the_class_defaults_of_the_rest():
    agent = L2A(hidden_dim=8, metatest={"context": 20}, mpc={"horizon": 5})
    assert agent.metatest == MetaTestSettings(context=20, episodes=10)  # L2A's 10 episodes, not the block's 50
    assert (agent.mpc.horizon, agent.mpc.samples) == (5, 64)
    assert agent.hparams.metatest["episodes"] == 10  # plain data in the checkpoint's hyperparameters
    with pytest.raises(ValueError, match=r"unknown MetaTestSettings field\(s\) \['episode'\]"):
        L2A(metatest={"episode": 3})


@pytest.mark.parametrize(("tasks", "per_iteration"), [(16, 8), (16, 2), (6, 2), (4, None)])
def test_the_collection_schedule_is_one_round_robin_whatever_the_number_of_ranks(tasks, per_iteration):
    """W = 2: the union over ranks of the tasks collected at iterations 1..T/K is the 1-process schedule,
    each rank collecting its share, and every task gets one episode per T/K iterations."""
    learner = L2A(hidden_dim=8, budget={"num_train_tasks": tasks},
                  collection={"tasks_per_iteration": per_iteration})  # fmt: skip
    k = per_iteration or tasks
    episodes = torch.zeros(tasks, dtype=torch.long)
    for iteration in range(1, tasks // k + 1):
        learner.iterations = iteration
        one_process = learner.collection_tasks()
        shares = [rank_share(one_process, rank, 2) for rank in range(2)]
        assert torch.equal(torch.cat(shares).sort().values, one_process)
        assert [len(share) for share in shares] == [k // 2] * 2
        assert torch.equal(one_process, ((iteration - 1) * k + torch.arange(k)).remainder(tasks).sort().values)
        episodes[one_process] += 1
    assert (episodes == 1).all()
