"""The configs compose and are typed: a family's file is a shared base plus a few lines, ``env`` and
``seed_everything`` are said once, ``--print_config`` shows every setting of the policy block and an
unknown or doubly given one is refused at parse time, before anything runs (in-process, no training)."""

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
    assert config["base"] is None  # composed: the printed config stands alone
    policy = config["dyna"]["init_args"]["policy"]
    assert policy["class_path"] == "modules.APSModule"
    assert {"horizon", "min_action_std", "ppo"} <= set(policy["init_args"])  # defaults shown too
    assert set(policy["init_args"]["ppo"]) == {"ppo_epochs", "num_minibatches", "clip_ratio", "gamma",
                                               "gae_lambda", "entropy_coef", "value_coef", "lr"}  # fmt: skip


def test_an_unknown_policy_setting_is_refused_with_its_name(tmp_path, capsys):
    config = train.compose_config(ROOT / "conf/acrobot.yaml")
    config["dyna"]["init_args"]["policy"]["init_args"] = {"horizn": 30}
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
    aps = dyna.make_policy("acrobot", 2, 8, seed=7)
    assert (aps.hparams.horizon, aps.hparams.latent_dim, aps.hparams.context_size, aps.hparams.seed) == (3, 2, 8, 7)
    assert "variant" not in aps.hparams  # nothing of the dynamics model's


def test_a_family_file_is_the_shared_base_plus_its_own_lines():
    acrobot, cartpole = (train.compose_config(ROOT / f"conf/{env}.yaml") for env in ("acrobot", "cartpole_swingup"))
    assert acrobot["env"] == "acrobot" and cartpole["env"] == "cartpole_swingup"
    ppo = cartpole["dyna"]["init_args"]["policy"]["init_args"]["ppo"]
    assert ppo == {"entropy_coef": 0.02}  # one setting overridden, the rest the class defaults
    cartpole["env"] = "acrobot"
    del cartpole["dyna"]["init_args"]["policy"]["init_args"]
    schedule = {("trainer", "max_epochs"): (28, 14), ("dyna", "init_args", "policy_epochs"): (10, None),
                ("dyna", "init_args", "collect_tasks_per_iteration"): (8, None),
                ("dyna", "init_args", "metatest"): ({"every_transitions": 12000}, None),
                ("data", "init_args", "batches_per_epoch"): (300, None)}  # fmt: skip
    for path, values in schedule.items():  # cart-pole's finer Dyna schedule
        *parents, key = path
        cp, ac = cartpole, acrobot
        for p in parents:
            cp, ac = cp[p], ac.get(p, {})
        assert (cp[key], ac.get(key)) == values, path
        if key in ac:
            cp[key] = ac[key]
        else:
            del cp[key]
    assert cartpole["data"].pop("init_args") == {}
    assert cartpole == acrobot  # nothing else differs
    assert (ROOT / "conf/cartpole_swingup.yaml").read_text().count("\n") < 30


@pytest.mark.parametrize("config", ["conf/acrobot.yaml", "conf/smoke/half_cheetah.yaml"])
def test_env_and_seed_are_said_once_and_reach_every_part(config):
    cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                         args=["--config", str(ROOT / config), "--seed_everything", "5",
                               "--trainer.logger.init_args.save_dir", "unused"])  # fmt: skip
    env = yaml.safe_load((ROOT / config).read_text())["env"]
    dyna = next(c for c in cli.trainer.callbacks if isinstance(c, DynaLoop))
    assert (cli.model.hparams.env, cli.datamodule.hparams.env, cli.trainer.logger.name) == (env, env, env)
    assert (cli.model.hparams.seed, cli.datamodule.hparams.seed, dyna.seed) == (5, 5, 5)


def test_a_job_without_a_dyna_block_gets_no_dyna_loop():
    cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                         args=["--config", str(ROOT / "conf/model/acrobot.yaml")])  # fmt: skip
    assert not any(isinstance(c, DynaLoop) for c in cli.trainer.callbacks)
    assert cli.datamodule.hparams.env == "acrobot" and cli.trainer.logger.name == "acrobot"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data.env", "cartpole_swingup"], "--data.env is set by --env"),
        (["--model.init_args.seed=3"], "--model.seed is set by --seed_everything"),
        (["--config", "OLD"], "sets model.env, which `env` sets"),
        (["--seed_everything", "true"], "seed_everything=true; give an integer"),
    ],
)
def test_a_doubly_given_setting_is_refused_not_dropped_and_the_seed_is_an_integer(extra, expected, tmp_path):
    old = tmp_path / "old.yaml"  # the flat format of earlier versions: env named in each group
    old.write_text(yaml.safe_dump({"model": {"class_path": "modules.MetaDynamicsModel",
                                             "init_args": {"env": "acrobot"}}}))  # fmt: skip
    args = [str(old) if a == "OLD" else a for a in extra]
    with pytest.raises(SystemExit) as stop:
        train.main(["fit", "--config", str(ROOT / "conf/acrobot.yaml"), *args])
    assert expected in str(stop.value)


def test_bases_chain_in_order_and_a_loop_or_a_missing_base_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    baselines = ROOT / "conf/baselines"
    assert train.expand_bases(["fit", "-c", str(baselines / "acrobot_pe_ppo.yaml"), "--x", "1"]) == [
        "fit", "--config", str(baselines / "dr_ppo.yaml"), "--config", str(baselines / "pe_ppo.yaml"),
        "--config", str(baselines / "acrobot_pe_ppo.yaml"), "--base=null", "--x", "1",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="already in its chain"):
        train.expand_bases(["--config", str(tmp_path / "a.yaml")])
    with pytest.raises(ValueError, match=r"nowhere\.yaml, which does not exist"):
        train.expand_bases(["--config", str(tmp_path / "c.yaml")])
