"""GSSM vs MLSM-v0 vs MLSM-v1 on identical random-policy data: held-out NLL/MSE, multi-step
rollout error, size, speed.

    python benchmarks/model_comparison.py [--envs acrobot cartpole_swingup] [--seeds 0 1 2] [--epochs 30]
        [--variants gssm mlsm_v0 mlsm_v1] [--results docs/results/model_comparison] [--note TEXT]

Every variant of one env and seed trains on the same data (the datamodule's ``seed``) for the
same number of steps with the settings of ``conf/model/<env>.yaml``. Each run writes
``<results>/<env>/<variant>_seed<k>.json`` (:mod:`raw_results`; a run whose file exists is skipped):
the test-task NLL and MSE (normalised Δs; see ``modules/models/meta_dynamics_model.py``) and the
H-step open-loop rollout error (:func:`rollout_error`, H = 10 and 50), split into interpolation and
extrapolation tasks, the parameter count and the training throughput (target transitions per second
of the optimisation loop). The report's table gives mean ± std across seeds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from raw_results import RESULTS, add_note_argument, write_result

from callbacks import NormalizerFitting
from datamodules import MultiTaskBuffer, TransitionDataModule
from modules import MetaDynamicsModel
from modules.models.meta_dynamics_net import VARIANTS
from train import compose_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HORIZONS = (10, 50)


class Throughput(pl.Callback):
    """Wall time of the training batches only (no validation, no data collection)."""

    def __init__(self):
        self.seconds, self.targets = 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._t
        self.targets += batch["target_x"].shape[0] * batch["target_x"].shape[1]


@torch.no_grad()
def rollout_error(
    model: MetaDynamicsModel, buffer: MultiTaskBuffer, horizons: tuple[int, ...] = HORIZONS, context_size: int = 50,
    starts: int = 32, seed: int = 0,
) -> dict[int, torch.Tensor]:  # fmt: skip
    """Open-loop error of the model's mean prediction after ``h`` steps, per task ``[T]``.

    From ``starts`` random states of each task's recorded episodes (windows that cross no episode
    boundary), the model replays the recorded actions for ``max(horizons)`` steps, its latent the
    mean of ``q(z_c | context)`` for a random context of ``context_size`` transitions of the same
    task; the error is the RMSE of ``s_{t+h}`` in units of each observation dimension's std.
    """
    g = torch.Generator().manual_seed(seed)
    span = max(horizons)
    # a transition continues into the next stored one unless an episode ended between them
    joined = (buffer.next_obs[:, :-1] - buffer.obs[:, 1:]).abs().amax(-1) < 1e-6  # [T, C-1]
    windows = joined.float().unfold(1, span - 1, 1).amin(-1) > 0  # [T, C-span+1]: span steps, no reset
    windows &= torch.arange(windows.shape[1])[None] + span <= buffer.size[:, None]
    if not windows.any(1).all():
        raise ValueError(f"every task needs a recorded episode of at least {span} steps")
    first = torch.multinomial(windows.float(), starts, replacement=True, generator=g)  # [T, S]
    tasks = torch.arange(buffer.num_tasks)
    cx, cy = buffer.xy(tasks, buffer.sample_index(tasks, context_size, g))
    encoding = model.infer_context(cx, cy)
    z = encoding.q_zc.mean  # [T, Z]
    rows = tasks[:, None].expand_as(first)
    scale = buffer.obs[buffer.size[:, None] > torch.arange(buffer.capacity)].std(0)  # [O]
    obs, errors = buffer.obs[rows, first], {}
    for h in range(1, span + 1):
        x = torch.cat([obs, buffer.action[rows, first + h - 1]], dim=-1)
        obs = model.predict(x, encoding, z).mean  # [T, S, O]
        if h in horizons:
            real = buffer.next_obs[rows, first + h - 1]
            errors[h] = (((obs - real) / scale) ** 2).mean((1, 2)).sqrt()
    return errors


def run(env: str, variant: str, seed: int, epochs: int, workdir: str, quick: bool = False) -> dict[str, float]:
    """Train one variant on ``conf/model/<env>.yaml`` data; its held-out scores, size and speed
    (``quick``: tiny widths and data, for the test suite's smoke run)."""
    conf = compose_config(os.path.join(ROOT, f"conf/model/{env}.yaml"))  # env and seed: set below
    pl.seed_everything(seed, verbose=False)
    data_conf, model_conf = dict(conf["data"]["init_args"]), dict(conf["model"]["init_args"])
    if quick:
        data_conf.update(num_train_tasks=2, random_steps_per_task=120, val_steps_per_task=120, batches_per_epoch=2,
                         val_batches=1, tasks_per_batch=2)  # fmt: skip
        model_conf.update(hidden_dim=16, num_heads=2)
    data = TransitionDataModule(**{**data_conf, "env": env, "seed": seed})
    model = MetaDynamicsModel(**{**model_conf, "env": env, "variant": variant})
    speed = Throughput()
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=epochs,
        callbacks=[NormalizerFitting(refit_every_epoch=False), speed],  # as conf/model/gssm.yaml
        default_root_dir=workdir,
    )
    trainer.fit(model, data)
    scores = trainer.validate(model, data, verbose=False)[0]
    errors = rollout_error(model.eval(), data.val_buffer, seed=seed)
    extrapolation = data.test_extrapolation
    for h, per_task in errors.items():
        scores[f"rollout{h}/interpolation"] = per_task[~extrapolation].mean()
        scores[f"rollout{h}/extrapolation"] = per_task[extrapolation].mean()
    return {
        **{k: float(v) for k, v in scores.items()},
        "params": sum(p.numel() for p in model.parameters()),
        "samples_per_s": speed.targets / speed.seconds,
    }


def setup_quiet() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["acrobot", "cartpole_swingup"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--results", type=Path, default=RESULTS / "model_comparison")
    add_note_argument(parser)
    args = parser.parse_args()
    setup_quiet()
    with tempfile.TemporaryDirectory() as workdir:
        for env in args.envs:
            for variant in args.variants:
                for seed in args.seeds:
                    path = args.results / env / f"{variant}_seed{seed}.json"
                    if path.exists():
                        print(f"skip {env} {variant} seed {seed}: {path} exists", flush=True)
                        continue
                    start = time.perf_counter()
                    scores = run(env, variant, seed, args.epochs, workdir)
                    result = {"env": env, "variant": variant, "seed": seed, "epochs": args.epochs, "scores": scores}
                    write_result(path, result, time.perf_counter() - start, args.note)
                    print(f"{env} {variant} seed {seed} ({time.perf_counter() - start:.0f} s): {scores}", flush=True)


if __name__ == "__main__":
    main()
