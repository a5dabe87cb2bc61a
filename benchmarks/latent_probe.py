"""Does the task latent carry the task? A linear probe of ``E[q(z_c | C)]`` and a latent swap.

    python benchmarks/latent_probe.py --ckpt runs/acrobot/version_0/checkpoints/last.ckpt [--ckpt ...]
    python benchmarks/latent_probe.py --config conf/acrobot.yaml conf/cartpole_swingup.yaml   # train first
        [--tasks 64] [--context 50] [--seed 1234] [--out probe.json]

For each Dyna checkpoint (or the main job of each ``--config``, trained first in a temporary
directory): ``--tasks`` random tasks with every physics parameter uniform in its training range
(*inside*) and as many with every parameter uniform in a band just outside it (*outside*: 10% of the
range's width beyond a randomly chosen edge, per parameter), drawn from ``--seed`` (not a seed of
the repository's task lists). In every task the checkpoint's policy collects ``--context``
transitions with the meta-test's online protocol (:func:`callbacks.meta_test.collect_online_context`:
the latent re-inferred as the context grows), and as many again as one-step targets. Then:

* **R²**: the mean of ``q(z_c | context)`` is mapped linearly (least squares with intercept) to each
  physics parameter, fitted on a random half of the tasks (inside and outside alike) and scored on
  the other half; printed for the held-out half, and its inside and outside tasks separately.
* **Swap**: the one-step error (MSE of the predicted mean ``Δs``, each dimension divided by the model's
  ``Δs`` std) of every task with its own latent, with another task's latent (same context, so the
  attention path still sees the task), and with another task's whole context.

Targets of the sample-efficiency issue: R² ≥ 0.8 for every parameter, swapped latent ≥ 2× the error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from callbacks.meta_test import collect_online_context  # noqa: E402
from envs import Task, TaskFamily, make_family  # noqa: E402
from modules import APSModule, MetaDynamicsModel  # noqa: E402
from modules.actor_critic import ActorCritic  # noqa: E402

R2_TARGET, SWAP_TARGET = 0.8, 2.0
OUTSIDE_BAND = 0.1


def sample_probe_tasks(family: TaskFamily, n: int, seed: int) -> list[Task]:
    """``n`` tasks inside the training ranges, then ``n`` just outside (see the module docstring)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n):
        params = {k: float(rng.uniform(*family.train_ranges[k])) for k in family.param_names}
        tasks.append(family.make_task(f"probe-in-{i:03d}", "interpolation", **params))
    for i in range(n):
        params = {}
        for k in family.param_names:
            lo, hi = family.train_ranges[k]
            band = OUTSIDE_BAND * (hi - lo)
            params[k] = float(rng.uniform(hi, hi + band) if rng.random() < 0.5 else rng.uniform(lo - band, lo))
        tasks.append(family.make_task(f"probe-out-{i:03d}", "extrapolation", **params))
    return tasks


def r_squared(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> float:
    """R² on rows ``test`` of the least-squares map (with intercept) from ``x [N, Z]`` to ``y [N]``
    fitted on rows ``train``.

    Example:
        >>> x = torch.randn(40, 2, dtype=torch.float64)
        >>> round(r_squared(x, 3 * x[:, 0] - x[:, 1] + 1, torch.arange(20), torch.arange(20, 40)), 6)
        1.0
    """
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    coef = torch.linalg.lstsq(design[train], y[train, None]).solution
    residual = y[test] - (design[test] @ coef)[:, 0]
    return float(1 - (residual**2).sum() / ((y[test] - y[test].mean()) ** 2).sum())


@torch.no_grad()
def probe(
    model: MetaDynamicsModel, policy: ActorCritic, family: TaskFamily, tasks: list[Task], n_context: int, seed: int
) -> dict:
    """R² per parameter and the one-step errors (see the module docstring) on ``tasks``."""
    model.eval()
    infer = lambda cx, cy, mask: model.infer_context(cx, cy, mask).q_zc  # noqa: E731
    cx, cy = collect_online_context(family, tasks, infer, policy, n_context, seed)
    tx, ty = collect_online_context(family, tasks, infer, policy, n_context, seed + 1)
    encoding = model.infer_context(cx, cy)
    latent = encoding.q_zc.mean  # [T, Z]
    t = len(tasks)
    g = torch.Generator().manual_seed(seed)
    other = (torch.arange(t) + torch.randint(1, t, (t,), generator=g)) % t  # another task for every task

    def one_step_error(enc, z) -> float:
        pred = model.predict(tx, enc, z_c=z).mean - tx[..., : family.obs_dim]
        return float((((pred - ty) / model.y_normalizer.std) ** 2).mean())

    own = one_step_error(encoding, latent)
    swapped_latent = one_step_error(encoding, latent[other])
    swapped_context = one_step_error(model.infer_context(cx[other], cy[other]), latent[other])

    params = family.params_tensor(tasks).double()
    inside = torch.tensor([task.split == "interpolation" for task in tasks])
    perm = torch.randperm(t, generator=g)
    train, test = perm[: t // 2], perm[t // 2 :]
    z = latent.double()
    r2 = {}
    for j, name in enumerate(family.param_names):
        r2[name] = {
            "all": r_squared(z, params[:, j], train, test),
            "inside": r_squared(z, params[:, j], train, test[inside[test]]),
            "outside": r_squared(z, params[:, j], train, test[~inside[test]]),
        }
    return {"r2": r2, "one_step": {"own": own, "swapped_latent": swapped_latent, "swapped_context": swapped_context}}


def load_checkpoint(path: str) -> tuple[MetaDynamicsModel, ActorCritic, TaskFamily]:
    """The dynamics model and APS policy of a Dyna checkpoint (``weights_only``: tensors and plain data)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "DynaLoop" not in ckpt.get("callbacks", {}):
        raise ValueError(f"{path!r} holds no DynaLoop state; expected a checkpoint of the main job (train.py fit)")
    hp = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    model = MetaDynamicsModel(**hp)
    model.load_state_dict(ckpt["state_dict"])
    aps_state = ckpt["callbacks"]["DynaLoop"]["aps"]
    hidden = aps_state["policy.actor.0.weight"].shape[0]
    aps = APSModule(env=hp["env"], latent_dim=hp["latent_dim"], hidden_dim=hidden)
    aps.load_state_dict(aps_state)
    return model.eval(), aps.policy.eval(), make_family(hp["env"])


def run_label(path: str) -> str:
    """A short name for a checkpoint: its ``seed*`` folder (benchmark layout) or ``version_*`` folder."""
    parts = Path(path).parts
    return next((p for p in reversed(parts) if p.startswith(("seed", "version_"))), Path(path).name)


def train_main_job(config: str, workdir: Path) -> str:
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / config),
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{proc.stderr[-4000:]}")
    return str(max(workdir.glob("runs/**/last.ckpt"), key=lambda p: p.stat().st_mtime))


def markdown(rows: list[dict]) -> str:
    lines = ["| checkpoint | env | parameter | R² (held-out half) | R² inside | R² outside |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        for name, r2 in row["r2"].items():
            lines.append(f"| {row['label']} | {row['env']} | {name} | {r2['all']:.3f} | {r2['inside']:.3f} | "
                         f"{r2['outside']:.3f} |")  # fmt: skip
    lines += ["", "| checkpoint | env | one-step error, own latent | another task's latent | another task's context "
              "| swapped latent / own |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        s = row["one_step"]
        lines.append(f"| {row['label']} | {row['env']} | {s['own']:.4f} | {s['swapped_latent']:.4f} | "
                     f"{s['swapped_context']:.4f} | {s['swapped_latent'] / s['own']:.2f}× |")  # fmt: skip
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        worst = min(r["all"] for r in row["r2"].values())
        ratio = row["one_step"]["swapped_latent"] / row["one_step"]["own"]
        where = f"{row['env']} ({row['label']})"
        met = "met" if worst >= R2_TARGET else "missed"
        out.append({"target": f"{where}: latent probe R² ≥ {R2_TARGET} for every parameter",
                    "measured": f"lowest {worst:.3f}", "status": met})  # fmt: skip
        out.append({"target": f"{where}: a swapped latent ≥ {SWAP_TARGET}× the one-step error",
                    "measured": f"{ratio:.2f}×", "status": "met" if ratio >= SWAP_TARGET else "missed"})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", default=[], help="Dyna checkpoints to probe")
    parser.add_argument("--config", nargs="+", default=[], help="main-job configs to train, then probe")
    parser.add_argument("--tasks", type=int, default=64, help="tasks inside, and as many outside, the ranges")
    parser.add_argument("--context", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args()
    if not args.ckpt and not args.config:
        parser.error("give --ckpt or --config")
    torch.manual_seed(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(args.ckpt) + [train_main_job(c, Path(tmp) / str(i)) for i, c in enumerate(args.config)
                                   if (Path(tmp) / str(i)).mkdir() is None]  # fmt: skip
        for path in paths:
            model, policy, family = load_checkpoint(path)
            tasks = sample_probe_tasks(family, args.tasks, args.seed)
            result = probe(model, policy, family, tasks, args.context, args.seed)
            rows.append({"label": run_label(path), "path": path, "env": family.name, **result})
    text = markdown(rows)
    print(f"# latent probe: {args.tasks} tasks inside and {args.tasks} outside the training ranges, "
          f"{args.context} context transitions, seed {args.seed}")  # fmt: skip
    print(text)
    for t in targets(rows):
        print(f"- {t['target']}: {t['measured']} ({t['status']})")
    if args.out:
        command = " ".join(["python", "benchmarks/latent_probe.py", *sys.argv[1:]])
        Path(args.out).write_text(json.dumps({"rows": rows, "markdown": text, "targets": targets(rows),
                                              "command": command}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
