"""The configs are typed: ``--print_config`` shows every setting of the policy block and an unknown
one is refused at parse time, before anything runs (in-process, no training)."""

from __future__ import annotations

import sys

import pytest
import pytorch_lightning as pl
import yaml
from cli_runner import ROOT

import train
from callbacks import DynaLoop

TINY = ROOT / "tests/configs/tiny_dyna.yaml"

MAIN_CONFIGS = ["acrobot", "cartpole_swingup", "half_cheetah", "slim_humanoid"]


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """LightningCLI reads ``args``; pytest's own command line is not for it."""
    monkeypatch.setattr(sys, "argv", ["train.py"])


def printed_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as stop:
        train.main(["fit", *args, "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("env", MAIN_CONFIGS)
def test_the_dyna_policy_block_is_an_aps_module_with_every_setting_shown(env, capsys):
    config = printed_config(capsys, "--config", str(ROOT / f"conf/{env}.yaml"))
    dyna = next(c for c in config["trainer"]["callbacks"] if c["class_path"] == "callbacks.DynaLoop")
    policy = dyna["init_args"]["policy"]
    assert policy["class_path"] == "modules.APSModule"
    assert {"horizon", "min_action_std", "ppo"} <= set(policy["init_args"])  # defaults shown too
    assert set(policy["init_args"]["ppo"]) == {"ppo_epochs", "num_minibatches", "clip_ratio", "gamma",
                                               "gae_lambda", "entropy_coef", "value_coef", "lr"}  # fmt: skip


def test_an_unknown_policy_setting_is_refused_with_its_name(tmp_path, capsys):
    config = yaml.safe_load((ROOT / "conf/acrobot.yaml").read_text())
    dyna = next(c for c in config["trainer"]["callbacks"] if c["class_path"] == "callbacks.DynaLoop")
    dyna["init_args"]["policy"]["init_args"]["horizn"] = 30
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as stop:
        train.main(["fit", "--config", str(bad), "--print_config"])
    assert stop.value.code != 0
    assert "horizn" in capsys.readouterr().err


def test_model_free_configs_take_the_ppo_block(capsys):
    config = printed_config(capsys, "--config", str(ROOT / "conf/baselines/acrobot_dr_ppo.yaml"))
    assert config["model"]["init_args"]["ppo"]["ppo_epochs"] == 10 and config["model"]["init_args"]["ppo"]["lr"] == 3e-4


def test_the_policy_built_from_the_dyna_config_keeps_its_own_hyperparameters():
    """LightningCLI instantiates a nested LightningModule with the main model's hyperparameters in
    context (Lightning 2.6); APS must save its own, or its first PPO iteration fails."""
    cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                         args=["--config", str(ROOT / "conf/acrobot.yaml"), "--config", str(TINY)])  # fmt: skip
    dyna = next(c for c in cli.trainer.callbacks if isinstance(c, DynaLoop))
    aps = dyna.make_policy("acrobot", 2, seed=7)
    assert (aps.hparams.horizon, aps.hparams.latent_dim, aps.hparams.seed) == (3, 2, 7)
    assert "variant" not in aps.hparams  # nothing of the dynamics model's
