"""Imagined-rollout transitions/s (policy + model + reward) at the default acrobot sizes.

    python benchmarks/imagination_throughput.py [--devices cpu cuda] [--repeats 10] [--context-sets 4 64]

Builds the model and policy of ``conf/acrobot.yaml`` (untrained: speed does not depend on the
weights), 16 tasks × 64 rollouts × horizon 20 with the config's context sets per task (up to 50
transitions each; ``--context-sets`` adds rows for other counts, 64 = one set per rollout),
and times :meth:`APSModule.imagine_batch` (context encoding once per batch, then the rollout);
the rate is that of the median batch. The matmul runs first: its large buffers also raise glibc's
dynamic mmap threshold, so every row times the steady state of a long-running process (otherwise
the first row alone pays page faults for its multi-MB tensors and reads ~25% slower).

The FLOP-bound limit: ``torch.utils.flop_counter`` counts the matmul FLOPs of one batch (the
elementwise work is not counted), a large fp32 matmul measured in the same run gives the
machine's attainable rate, and limit = rate / FLOPs per transition.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datamodules import TransitionDataModule  # noqa: E402
from modules import APSModule, MetaDynamicsModel  # noqa: E402
from modules.aps import ImaginationSource  # noqa: E402


def synchronizer(device: str):
    """Waits for queued kernels on ``device`` (a no-op on CPU), so wall-clock timings are honest."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def matmul_gflops(device: str, n: int = 4096, repeats: int = 5) -> float:
    """Attainable fp32 rate: GFLOP/s of an ``n × n`` matmul on ``device``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync = synchronizer(device)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--context-sets", type=int, nargs="*", default=[], help="extra context sets per task")
    args = parser.parse_args()
    conf = yaml.safe_load((ROOT / "conf/acrobot.yaml").read_text())
    policy_conf = next(c for c in conf["trainer"]["callbacks"] if c["class_path"].endswith("DynaLoop"))
    policy_conf = policy_conf["init_args"]["policy"]
    data = TransitionDataModule(**conf["data"]["init_args"])
    x, y = data.model_training_data()
    print(f"# imagined transitions/s, acrobot defaults; {os.cpu_count()} cpus, torch {torch.__version__}")
    print("| device | batch (tasks × rollouts) | context sets/task | horizon | transitions/s | matmul GFLOP/s | "
          "MFLOP/transition | FLOP-bound limit | achieved |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    runs = [(d, policy_conf["context_sets_per_task"]) for d in args.devices]
    runs += [(d, sets) for d in args.devices for sets in args.context_sets]
    gflops_of = {d: matmul_gflops(d) for d in args.devices}
    for device, sets in runs:
        gflops = gflops_of[device]
        model = MetaDynamicsModel(**conf["model"]["init_args"]).to(device).eval()
        model.x_normalizer.fit(x.to(device))
        model.y_normalizer.fit(y.to(device))
        policy_args = {**policy_conf, "context_sets_per_task": sets}
        aps = APSModule(env="acrobot", latent_dim=model.hparams.latent_dim, **policy_args).to(device)
        params = data.family.params_tensor(data.train_tasks)
        aps.source = ImaginationSource(model, data.buffer, torch.arange(len(data.train_tasks)), params)
        aps.imagine_batch()  # warm-up
        sync, seconds = synchronizer(device), []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            rollouts = aps.imagine_batch()
            sync()
            seconds.append(time.perf_counter() - start)
        rate = rollouts.reward.numel() / statistics.median(seconds)  # median: robust to a noisy host
        with FlopCounterMode(display=False) as counter:
            aps.imagine_batch()
        flops = counter.get_total_flops() / rollouts.reward.numel()
        limit = gflops * 1e9 / flops
        batch = f"{len(data.train_tasks)} × {policy_conf['rollouts_per_task']}"
        print(f"| {device} | {batch} | {sets} | {policy_conf['horizon']} | {rate:,.0f} | {gflops:,.0f} "
              f"| {flops / 1e6:.3f} | {limit:,.0f} | {rate / limit:.0%} |", flush=True)


if __name__ == "__main__":
    main()
