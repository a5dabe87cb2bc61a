"""Throughput of the hot loops: imagination (with its FLOP-bound limit), real env steps, model
training, and the policy's action latency with context inference.

    python benchmarks/throughput.py [--devices cpu cuda] [--repeats 10] [--context-sets 4 64] [--quick]
        [--out docs/results/throughput.json] [--note "beside 2 other runs"]

* **Imagination**: the model and policy of ``conf/acrobot.yaml`` (untrained: speed does not depend on
  the weights), 16 tasks × 64 rollouts × horizon 20 with the config's context sets per task (up to 50
  transitions each; ``--context-sets`` adds rows for other counts, 64 = one set per rollout); times
  :meth:`APSModule.imagine_batch` (context encoding once per batch, then the rollout) and reports the
  rate of the median batch. The FLOP-bound limit: ``torch.utils.flop_counter`` counts the matmul
  FLOPs of one batch (elementwise work is not counted), a large fp32 matmul measured in the same run
  gives the attainable rate, and limit = rate / FLOPs per transition. The matmul runs first: its
  large buffers also raise glibc's dynamic mmap threshold, so every row times the steady state of a
  long-running process (otherwise the first row alone pays page faults for its multi-MB tensors).
* **Env steps/s**: ``benchmarks/env_throughput.py`` (single env, vector env over 16 tasks).
* **Model training**: target transitions/s of GSSM's optimisation loop (``conf/model/acrobot.yaml``).
* **Action latency**: one test task at batch 1: ``q(z_c | 50 context transitions)`` then the policy's
  action, the median over calls — what a controller pays per step while it adapts online.

Writes ``docs/results/throughput.json`` (:mod:`raw_results`), the report's Throughput section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from raw_results import RESULTS, add_note_argument, write_result  # noqa: E402

import envs  # noqa: E402
from datamodules import TransitionDataModule  # noqa: E402
from modules import APSModule, MetaDynamicsModel  # noqa: E402
from modules.methods.gssm_aps.aps import ImaginationSource  # noqa: E402
from train import compose_config  # noqa: E402


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


def acrobot_setup(quick: bool) -> tuple[dict, dict, TransitionDataModule]:
    """The main config, its APS arguments and its datamodule (``quick``: tiny sizes for the tests)."""
    conf = compose_config(ROOT / "conf/acrobot.yaml")
    conf["model"].setdefault("init_args", {})["env"] = conf["env"]  # train.py links env and seed; here set by hand
    policy_conf = dict(conf["dyna"]["init_args"]["policy"].get("init_args", {}))  # {class_path: modules.APSModule}
    data_conf = {**conf["data"].get("init_args", {}), "env": conf["env"], "seed": conf["seed_everything"]}
    if quick:
        conf["model"]["init_args"]["hidden_dim"] = 16
        policy_conf.update(hidden_dim=16, rollouts_per_task=8, context_sets_per_task=2, horizon=4)
        data_conf.update(num_train_tasks=2, random_steps_per_task=60, val_steps_per_task=60, batches_per_epoch=2)
    return conf, policy_conf, TransitionDataModule(**data_conf)


def imagination(devices: list[str], extra_sets: list[int], repeats: int, quick: bool = False) -> list[dict]:
    """Imagined transitions/s per device and context-set count, with the FLOP-bound limit."""
    conf, policy_conf, data = acrobot_setup(quick)
    x, y = data.model_training_data()
    runs = [(d, None) for d in devices]  # None: the config's context sets
    runs += [(d, sets) for d in devices for sets in extra_sets]
    gflops_of = {d: matmul_gflops(d, n=256 if quick else 4096) for d in devices}
    rows = []
    for device, sets in runs:
        model = MetaDynamicsModel(**conf["model"]["init_args"]).to(device).eval()
        model.x_normalizer.fit(x.to(device))
        model.y_normalizer.fit(y.to(device))
        policy_args = {**policy_conf, **({} if sets is None else {"context_sets_per_task": sets})}
        aps = APSModule("acrobot", model.hparams.latent_dim, data.hparams.context_max, **policy_args).to(device)
        params = data.family.params_tensor(data.train_tasks)
        aps.source = ImaginationSource(model, data.buffer, torch.arange(len(data.train_tasks)), params)
        aps.imagine_batch()  # warm-up
        sync, seconds = synchronizer(device), []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            rollouts = aps.imagine_batch()
            sync()
            seconds.append(time.perf_counter() - start)
        rate = rollouts.reward.numel() / statistics.median(seconds)  # median: robust to a noisy host
        with FlopCounterMode(display=False) as counter:
            aps.imagine_batch()
        flops = counter.get_total_flops() / rollouts.reward.numel()
        limit = gflops_of[device] * 1e9 / flops
        rows.append({
            "device": device, "tasks": len(data.train_tasks), "rollouts_per_task": aps.hparams.rollouts_per_task,
            "context_sets": aps.hparams.context_sets_per_task, "horizon": aps.hparams.horizon,
            "transitions_per_s": rate, "matmul_gflops": gflops_of[device], "flop_per_transition": flops, "limit": limit,
        })  # fmt: skip
    return rows


@torch.no_grad()
def action_latency(repeats: int, quick: bool = False) -> dict:
    """Median seconds of ``infer_context`` (50 transitions) + one policy action at batch 1, CPU."""
    conf, policy_conf, data = acrobot_setup(quick)
    x, y = data.model_training_data()
    model = MetaDynamicsModel(**conf["model"]["init_args"]).eval()
    model.x_normalizer.fit(x)
    model.y_normalizer.fit(y)
    aps = APSModule("acrobot", model.hparams.latent_dim, data.hparams.context_max, **policy_conf)
    _, cx, cy = data.task_contexts(50)
    cx, cy, obs = cx[-1:], cy[-1:], cx[-1:, 0, : data.family.obs_dim]
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        latent = model.infer_context(cx, cy).q_zc.mean
        aps.policy.act(obs, latent, deterministic=True)
        seconds.append(time.perf_counter() - start)
    return {"seconds": statistics.median(seconds[1:]), "context": cx.shape[1]}


def model_training(quick: bool = False) -> float:
    """GSSM training target transitions/s on ``conf/model/acrobot.yaml`` (one epoch)."""
    from model_comparison import run, setup_quiet

    setup_quiet()
    with tempfile.TemporaryDirectory() as workdir:
        return run("acrobot", "gssm", 0, 1, workdir, quick=quick)["samples_per_s"]


def measure(devices: list[str], extra_sets: list[int], repeats: int, quick: bool = False) -> dict:
    """Every throughput figure of this benchmark, as a dict."""
    from env_throughput import single_env_steps_per_s, vector_env_steps_per_s

    steps = 200 if quick else 4000
    families = ["acrobot"] if quick else sorted(envs.FAMILIES)
    env_rows = []
    for name in families:
        fam = envs.make_family(name)
        env_rows.append({"family": name, "single": single_env_steps_per_s(fam, steps),
                         "vector16": vector_env_steps_per_s(fam, steps)})  # fmt: skip
    return {
        "imagination": imagination(devices, extra_sets, repeats, quick),
        "env": env_rows,
        "model_samples_per_s": model_training(quick),
        "action_latency": action_latency(repeats, quick),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--context-sets", type=int, nargs="*", default=[], help="extra context sets per task")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    add_note_argument(parser)
    args = parser.parse_args()
    start = time.perf_counter()
    result = measure(args.devices, args.context_sets, args.repeats, args.quick)
    settings = {"devices": args.devices, "repeats": args.repeats, "context_sets": args.context_sets,
                "quick": args.quick}  # fmt: skip
    write_result(args.out, {"settings": settings, **result}, time.perf_counter() - start, args.note)
    print(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
