"""Every numeric setting of every shipped config has a declared range: a value outside it (0, -1, NaN,
a string) ends the start with one ``error: <setting>: …`` line before anything is built; a value
inside it, 0 or -1 with a documented meaning, is accepted (issue 28). The walk finds the settings from
the parsed config (what ``--print_config`` prints), not from a list here."""

from __future__ import annotations

import gc
import math
import re
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from cli_runner import ROOT, run_cli

import train
from common.validation import LIGHTNING_SEED, NUMBER, SEED, Range, setting_ranges
from datamodules.transition_datamodule import TransitionDataModule
from modules import APSModule
from modules.policies.ppo import PPOSettings

CONFIGS = sorted(p for p in (ROOT / "conf").rglob("*.yaml") if "env" in train.compose_config(p))
CHECKPOINT = ["--model.checkpoint", "main.ckpt"]  # the test-time methods need one named, never loaded here
TRIED = (0, -1, math.nan, "abc")
PLAIN_VALUES = (SEED, LIGHTNING_SEED, NUMBER)  # 0 or -1 is just one more seed or number, no special meaning


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """LightningCLI reads ``args``; pytest's own command line is not for it."""
    monkeypatch.setattr(sys, "argv", ["train.py"])


class _Parsed(train.MbmrlCLI):
    """Parses (and checks) only: the config as ``--print_config`` would print it."""

    def before_instantiate_classes(self) -> None:
        raise _Done(self.parser.dump(self.config, skip_validation=True))


class _Done(Exception):
    def __init__(self, dumped: str):
        self.config = yaml.safe_load(dumped)


def extra_args(path: Path) -> list[str]:
    return CHECKPOINT if "gssm_mpc" in path.name or "nonamortized" in path.name else []


def printed_config(path: Path) -> dict:
    with pytest.raises(_Done) as done:
        _Parsed(pl.LightningModule, None, subclass_mode_model=True, run=False,
                args=["--config", str(path), *extra_args(path)])  # fmt: skip
    return done.value.config


def numeric_leaves(node, path=()) -> dict[str, float]:
    """The int/float leaves of a printed config by dotted path (list items by index)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = {}
    for key, value in items:
        if isinstance(value, (dict, list)):
            found |= numeric_leaves(value, (*path, str(key)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[".".join((*path, str(key)))] = value
    return found


def with_leaf(config: dict, path: str, value) -> dict:
    out = yaml.safe_load(yaml.safe_dump(config))
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return out


def outcome(config: dict, tmp_path: Path, path: Path, capsys) -> str | None:
    """None when the CLI builds every class (the Dyna loop's policy too), else its one error line."""
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(config))
    args = ["--config", str(file), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), *extra_args(path)]
    try:
        cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False, args=args)
    except SystemExit as err:
        return str(err.code)
    dyna = cli.config_init.get("dyna")
    if dyna is not None:  # the loop builds APS in setup: build it here, as it would
        hp = cli.model.hparams
        dyna.make_policy(hp.env, hp.latent_dim, cli.datamodule.hparams.context_max, seed=dyna.seed)
    del cli, dyna
    gc.collect()  # each build holds full-size buffers (MuJoCo: ~200 MB): free them before the next
    assert not (tmp_path / "runs").exists()
    capsys.readouterr()
    return None


def names(leaf: str) -> tuple[str, ...]:
    unindexed = re.sub(r"[.]\d+[.]", ".", leaf)
    return f"error: {leaf}: ", f"error: {unindexed}: "


def walk(path: Path, tmp_path: Path, capsys, skip: frozenset[str] = frozenset()) -> None:
    """Every numeric leaf of ``path``'s printed config (but those in ``skip``) with each of :data:`TRIED`;
    every one, skipped or not, must have a declared range."""
    config = printed_config(path)
    ranges = setting_ranges(config)
    leaves = numeric_leaves(config)
    undeclared = sorted(set(leaves) - set(ranges))
    assert not undeclared, f"{path.name}: numeric settings without a declared range: {undeclared}"
    failures = []
    for leaf in (leaf for leaf in leaves if leaf not in skip):
        spec: Range = ranges[leaf][0]
        for value in TRIED:
            error = outcome(with_leaf(config, leaf, value), tmp_path, path, capsys)
            if spec.admits(value) and not (leaf == "trainer.max_epochs" and "dyna" in config):
                if error is not None:
                    failures.append(f"{leaf}={value} is in its range but refused: {error}")
                elif value in (0, -1) and value not in spec.special and spec not in PLAIN_VALUES:
                    failures.append(f"{leaf}={value} is accepted without a documented meaning")
            # a wrong type in a list item (a callback) is named without its index: the parser's error has none
            elif error is None or not error.startswith(names(leaf)) or "\n" in error:
                failures.append(f"{leaf}={value}: expected one 'error: {leaf}: …' line, got {error!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "conf")))
def test_every_numeric_setting_of_every_shipped_config_has_a_declared_range(path):
    config = printed_config(path)
    undeclared = sorted(set(numeric_leaves(config)) - set(setting_ranges(config)))
    assert not undeclared, f"{path.name}: numeric settings without a declared range: {undeclared}"


@pytest.mark.slow
def test_every_numeric_setting_of_the_acrobot_config_is_refused_outside_its_range(tmp_path, capsys):
    walk(ROOT / "conf/acrobot.yaml", tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in CONFIGS if p != ROOT / "conf/acrobot.yaml"],  # walked above
                         ids=lambda p: str(p.relative_to(ROOT / "conf")))  # fmt: skip
def test_every_numeric_setting_of_every_shipped_config_is_refused_outside_its_range(path, tmp_path, capsys):
    # train.py refuses a value from its path's declared range (setting_ranges): a path the acrobot walk tried
    # with the same range is refused by the same check, so only the others are tried here
    acrobot = printed_config(ROOT / "conf/acrobot.yaml")
    ranges, own = setting_ranges(acrobot), setting_ranges(printed_config(path))
    same = frozenset(leaf for leaf in numeric_leaves(acrobot) if leaf in own and own[leaf][0] == ranges[leaf][0])
    walk(path, tmp_path, capsys, same)


@pytest.mark.parametrize("subcommand", [[], ["fit"]])
def test_a_wrong_type_is_one_line_with_or_without_a_subcommand(subcommand, tmp_path, capsys):
    """A subcommand has a parser of its own: a wrong type there is one line too, not its usage."""
    args = [*subcommand, "--config", str(ROOT / "conf/acrobot.yaml"), "--model.init_args.lr", "abc",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        train.main(args) if subcommand else train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True,
                                                            run=False, args=args)  # fmt: skip
    assert str(stop.value.code).startswith("error: model.init_args.lr: abc — expected a number ≥ 0")
    assert capsys.readouterr().err == "" and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "value"), [
    ("seed_everything", "abc"), ("dyna.init_args.policy.init_args.horizon", "0"),
    ("model.init_args.latent_dim", "0"), ("model.init_args.lr", "-1"), ("trainer.max_epochs", "-1"),
])  # fmt: skip
def test_a_bad_value_ends_the_start_with_one_line_and_no_run_folder(setting, value, tmp_path):
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), f"--{setting}", value, check=False)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"error: {setting}: {value}"), lines
    assert not (tmp_path / "runs").exists()


def test_zero_means_what_the_docstrings_say():
    """min_action_std 0: no floor under the actor's std; entropy_coef and uncertainty_penalty 0: off;
    uncertainty_cut None: no cut; val_steps_per_task 0: no validation batches."""
    aps = APSModule(env="acrobot", latent_dim=2, hidden_dim=8, init_log_std=-5.0, min_action_std=0.0)
    std = aps.policy(torch.zeros(1, 6), torch.zeros(1, 2))[0].stddev
    assert float(std.detach().max()) < 0.01  # e^-5: no 0.2 floor
    assert PPOSettings(entropy_coef=0.0).entropy_coef == 0.0
    assert APSModule(env="acrobot", latent_dim=2, hidden_dim=8, uncertainty_penalty=0.0, uncertainty_cut=None)
    assert TransitionDataModule("acrobot", num_train_tasks=2, random_steps_per_task=20,
                                val_steps_per_task=0).val_dataloader() == []  # fmt: skip
    with pytest.raises(ValueError, match=r"APSModule.min_action_std: -1 — expected a number ≥ 0 \(0: no floor\)"):
        APSModule(env="acrobot", latent_dim=2, min_action_std=-1)
    with pytest.raises(ValueError, match=r"PPOSettings.lr: nan — expected a number > 0"):
        PPOSettings(lr=math.nan)
