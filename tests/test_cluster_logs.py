"""Off a terminal (a cluster's log file) a job writes its banners once and one line per Dyna
iteration, no progress-bar refreshes (docs/OPERATIONS.md#the-terminal)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from cli_runner import ROOT, run_cli
from test_dyna_cli import TINY

import train


def test_an_unset_progress_bar_is_drawn_on_a_terminal_only_and_the_inner_trainer_follows(monkeypatch):
    args = ["--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY, "--trainer.enable_progress_bar", "null"]
    for terminal in (False, True):
        monkeypatch.setattr("sys.stdout.isatty", lambda terminal=terminal: terminal)
        cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False, args=args)
        assert (cli.trainer.progress_bar_callback is not None) == terminal
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    forced = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                            args=[*args, "--trainer.enable_progress_bar", "true"])  # fmt: skip
    assert forced.trainer.progress_bar_callback is not None, "a setting in the config wins"


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])  # verbose: the inner policy fits' banners, bars only on a terminal
def test_a_job_logging_to_a_file_writes_no_bar_refreshes_and_one_line_per_iteration(tmp_path, verbose):
    log = tmp_path / "job.log"
    run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY,
            "--trainer.enable_progress_bar", "null", "--dyna.verbose", str(verbose).lower(), log=log)  # fmt: skip
    text = log.read_text()
    for refresh in ("\r", "\x1b[A", "it/s]"):
        assert refresh not in text, f"a progress-bar refresh ({refresh!r}) in the log:\n{text}"
    lines = text.splitlines()
    assert [line.split(" | ")[0] for line in lines if line.startswith("Dyna iteration ")] == [
        "Dyna iteration 1/2", "Dyna iteration 2/2"
    ]  # fmt: skip
    fits = 1 + 2 * verbose  # the main trainer's, and each iteration's policy fit when verbose
    assert text.count("GPU available") == fits and text.count("`Trainer.fit` stopped") == fits, text
    assert len(lines) <= 22 + 3 * 2 * verbose, text  # banners, the model summary, one line per iteration
