"""Imagined-rollout transitions/s (policy + model + reward) at the default acrobot sizes.

    python benchmarks/imagination_throughput.py [--devices cpu cuda] [--repeats 5]

Builds the model and policy of ``conf/acrobot.yaml`` (untrained: speed does not depend on the
weights), 16 tasks × 64 rollouts × horizon 20 with context sets of up to 50 transitions, and
times :meth:`APSModule.imagine_batch` (context encoding once per batch, then the rollout).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datamodules import TransitionDataModule  # noqa: E402
from modules import APSModule, MetaDynamicsModel  # noqa: E402
from modules.aps import ImaginationSource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    conf = yaml.safe_load((ROOT / "conf/acrobot.yaml").read_text())
    policy_conf = next(c for c in conf["trainer"]["callbacks"] if c["class_path"].endswith("DynaLoop"))
    policy_conf = policy_conf["init_args"]["policy"]
    data = TransitionDataModule(**conf["data"]["init_args"])
    x, y = data.model_training_data()
    print(f"# imagined transitions/s, acrobot defaults; {os.cpu_count()} cpus, torch {torch.__version__}")
    print("| device | batch (tasks × rollouts) | horizon | transitions/s |")
    print("|---|---:|---:|---:|")
    for device in args.devices:
        model = MetaDynamicsModel(**conf["model"]["init_args"]).to(device).eval()
        model.x_normalizer.fit(x.to(device))
        model.y_normalizer.fit(y.to(device))
        aps = APSModule(env="acrobot", latent_dim=model.hparams.latent_dim, **policy_conf).to(device)
        params = data.family.params_tensor(data.train_tasks)
        aps.source = ImaginationSource(model, data.buffer, torch.arange(len(data.train_tasks)), params)
        aps.imagine_batch()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.repeats):
            rollouts = aps.imagine_batch()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rate = args.repeats * rollouts.reward.numel() / (time.perf_counter() - start)
        batch = f"{len(data.train_tasks)} × {policy_conf['rollouts_per_task']}"
        print(f"| {device} | {batch} | {policy_conf['horizon']} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
