"""Does the task latent carry the task? A linear probe of ``E[q(z_c | C)]`` and a latent swap.

    python benchmarks/latent_probe.py --ckpt runs/acrobot/version_0/checkpoints/last.ckpt [--ckpt ...]
    python benchmarks/latent_probe.py --config conf/acrobot.yaml --config conf/cartpole_swingup.yaml  # train first
        [--tasks 64] [--context 50] [--seed 1234] [--identify-tasks 512] [--out docs/results/latent_probe_seed0.json]

(``--ckpt`` and ``--config`` take several paths, after one flag or repeated; one job's configs can be
layered with commas: ``--config conf/acrobot.yaml,tests/configs/tiny_dyna.yaml``.)

For each Dyna checkpoint (or the main job of each ``--config``, trained first in a temporary
directory): ``--tasks`` random tasks with every physics parameter uniform in its training range
(*inside*) and as many with every parameter uniform in a band just outside it (*outside*: 10% of the
range's width beyond a randomly chosen edge, per parameter), drawn from ``--seed`` (not a seed of
the repository's task lists; a draw equal to one of the family's test tasks is redrawn). In every
task the checkpoint's policy collects ``--context`` transitions with the meta-test's online
protocol (:func:`evaluation.collect_online_context`: the latent re-inferred as the context
grows), and as many again, in a second episode with its own seed, as one-step targets. The task
latent is the mean of ``q(z_c | context)``. Then:

* **R²**: the mean of ``q(z_c | context)`` is mapped linearly (least squares with intercept) to each
  physics parameter, fitted on a random half of the tasks (stratified: half of the inside and half
  of the outside tasks) and scored, ``1 − SSE/SST``, on the other half; printed for the held-out
  half, and for its inside and its outside tasks separately (each against its own variance).
* **Swap**: the one-step error (MSE of the predicted mean ``Δs``, each dimension divided by the model's
  ``Δs`` std) of every task with its own latent, with another task's latent (same context, so the
  attention path still sees the task), and with another task's whole context; "another task" is a
  random derangement of the tasks (a permutation without fixed points).

* **R²_max** (identifiability, :mod:`identifiability`): a supervised set encoder fitted on the contexts
  of ``--identify-tasks`` other tasks inside and as many outside the ranges (collected the same
  way) regresses the parameters; its R² on the same held-out half is what the context reveals at all.

Targets of the adaptation issue: R² ≥ 0.9 × R²_max for every parameter, swapped latent ≥ 2× the error
(``report_tables.probe_targets``). ``--out`` writes the rows as a raw result (:mod:`raw_results`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from identifiability import r2_max  # noqa: E402
from raw_results import add_note_argument, write_result  # noqa: E402
from report_tables import probe_markdown, probe_targets  # noqa: E402

from callbacks.task_latent_logger import linear_readout  # noqa: E402
from callbacks.task_latent_logger import r_squared as score  # noqa: E402
from envs import Task, TaskFamily  # noqa: E402
from evaluation import collect_online_context  # noqa: E402
from modules import MetaDynamicsModel  # noqa: E402
from modules.methods.gssm_aps.dyna_checkpoint import load_dyna_checkpoint  # noqa: E402
from modules.policies.actor_critic import ActorCritic  # noqa: E402

OUTSIDE_BAND = 0.1


def sample_probe_tasks(family: TaskFamily, n: int, seed: int) -> list[Task]:
    """``n`` tasks inside the training ranges, then ``n`` just outside (see the module docstring)."""
    rng = np.random.default_rng(seed)
    held_out = {t.params for t in family.test_tasks()}

    def inside() -> dict[str, float]:
        return {k: float(rng.uniform(*family.train_ranges[k])) for k in family.param_names}

    def outside() -> dict[str, float]:
        params = {}
        for k in family.param_names:
            lo, hi = family.train_ranges[k]
            band = OUTSIDE_BAND * (hi - lo)
            params[k] = float(rng.uniform(hi, hi + band) if rng.random() < 0.5 else rng.uniform(lo - band, lo))
        return params

    tasks: list[Task] = []
    for prefix, split, draw in (("probe-in", "interpolation", inside), ("probe-out", "extrapolation", outside)):
        i = 0
        while i < n:
            task = family.make_task(f"{prefix}-{i:03d}", split, **draw())
            if task.params not in held_out:
                tasks.append(task)
                i += 1
    return tasks


def stratified_halves(inside: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, test) row indices: half of the ``inside [T]`` rows and half of the others in each.

    Example:
        >>> train, test = stratified_halves(torch.arange(8) < 4, torch.Generator().manual_seed(0))
        >>> sorted((train < 4).tolist()), sorted((test < 4).tolist())
        ([False, False, True, True], [False, False, True, True])
    """
    train, test = [], []
    for stratum in (inside, ~inside):
        rows = stratum.nonzero().squeeze(1)
        rows = rows[torch.randperm(len(rows), generator=generator)]
        train.append(rows[: len(rows) // 2])
        test.append(rows[len(rows) // 2 :])
    return torch.cat(train), torch.cat(test)


def derangement(t: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(t)`` (``t ≥ 2``) without fixed points: one random cycle.

    Example:
        >>> other = derangement(5, torch.Generator().manual_seed(0))
        >>> sorted(other.tolist()), bool((other == torch.arange(5)).any())
        ([0, 1, 2, 3, 4], False)
    """
    if t < 2:
        raise ValueError(f"a swap needs at least 2 tasks, got {t}")
    order = torch.randperm(t, generator=generator)
    other = torch.empty(t, dtype=torch.long)
    other[order] = order.roll(-1)  # task order[i] takes the latent of order[i + 1]
    return other


def r_squared(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> float:
    """R² on rows ``test`` of the least-squares map (with intercept) from ``x [N, Z]`` to ``y [N]``
    fitted on rows ``train``.

    Example:
        >>> x = torch.randn(40, 2, dtype=torch.float64)
        >>> round(r_squared(x, 3 * x[:, 0] - x[:, 1] + 1, torch.arange(20), torch.arange(20, 40)), 6)
        1.0
    """
    return score(linear_readout(x, y, train)[test], y[test])


def probe_r2(
    latent: torch.Tensor, params: torch.Tensor, inside: torch.Tensor, names: list[str], seed: int
) -> dict[str, dict[str, float]]:
    """R² (all / inside / outside tasks of the held-out half) of the linear map from ``latent [T, Z]`` to
    each column of ``params [T, P]`` (named ``names``), fitted on a stratified random half (``seed``)."""
    train, test = stratified_halves(inside, torch.Generator().manual_seed(seed))
    z, p = latent.double(), params.double()
    return {
        name: {
            "all": r_squared(z, p[:, j], train, test),
            "inside": r_squared(z, p[:, j], train, test[inside[test]]),
            "outside": r_squared(z, p[:, j], train, test[~inside[test]]),
        }
        for j, name in enumerate(names)
    }


@torch.no_grad()
def collect_probe_data(
    model: MetaDynamicsModel, policy: ActorCritic, family: TaskFamily, tasks: list[Task], n_context: int, seed: int
) -> dict[str, torch.Tensor]:
    """Context ``cx, cy`` and one-step targets ``tx, ty`` (raw, ``[T, n_context, ·]``) collected by
    ``policy`` with the meta-test's online protocol (seeds ``seed`` and ``seed + 1``), and ``latent``:
    the mean of ``q(z_c | context)``, ``[T, Z]``."""
    model.eval()
    policy.eval()
    infer = lambda cx, cy, mask: model.infer_context(cx, cy, mask).q_zc  # noqa: E731
    cx, cy = collect_online_context(family, tasks, infer, policy, n_context, seed)
    tx, ty = collect_online_context(family, tasks, infer, policy, n_context, seed + 1)
    return {"cx": cx, "cy": cy, "tx": tx, "ty": ty, "latent": model.infer_context(cx, cy).q_zc.mean}


@torch.no_grad()
def swap_errors(model: MetaDynamicsModel, data: dict[str, torch.Tensor], seed: int) -> dict[str, float]:
    """One-step errors (see the module docstring) with each task's own latent, another task's latent,
    another task's whole context (``other``: a derangement drawn from ``seed``), and their ratios."""
    cx, cy, tx, ty = data["cx"], data["cy"], data["tx"], data["ty"]
    encoding = model.infer_context(cx, cy)
    latent = encoding.q_zc.mean
    other = derangement(len(cx), torch.Generator().manual_seed(seed))

    def one_step_error(enc, z) -> float:
        pred = model.predict(tx, enc, z_c=z).mean - tx[..., : ty.shape[-1]]
        return float((((pred - ty) / model.y_normalizer.std) ** 2).mean())

    own = one_step_error(encoding, latent)
    swapped_latent = one_step_error(encoding, latent[other])
    swapped_context = one_step_error(model.infer_context(cx[other], cy[other]), latent[other])
    return {
        "own": own,
        "swapped_latent": swapped_latent,
        "swapped_context": swapped_context,
        "latent_ratio": swapped_latent / own,
        "context_ratio": swapped_context / own,
    }


def probe(
    model: MetaDynamicsModel,
    policy: ActorCritic,
    family: TaskFamily,
    tasks: list[Task],
    n_context: int,
    seed: int,
    identify_tasks: int = 0,
) -> dict:
    """R² per parameter and the one-step errors (see the module docstring) on ``tasks``; with
    ``identify_tasks``, also ``R²_max`` per parameter on the same held-out half."""
    data = collect_probe_data(model, policy, family, tasks, n_context, seed)
    inside = torch.tensor([task.split == "interpolation" for task in tasks])
    params = family.params_tensor(tasks)
    out = {
        "n_inside": int(inside.sum()),
        "n_outside": int((~inside).sum()),
        "latent_dim": data["latent"].shape[-1],
        "r2": probe_r2(data["latent"], params, inside, family.param_names, seed),
        "one_step": swap_errors(model, data, seed),
    }
    if identify_tasks:
        out["r2_max"] = identifiability(model, policy, family, data, params, inside, n_context, seed, identify_tasks)
    return out


def identifiability(model: MetaDynamicsModel, policy: ActorCritic, family: TaskFamily, data: dict[str, torch.Tensor],
                    params: torch.Tensor, inside: torch.Tensor, n_context: int, seed: int,
                    identify_tasks: int) -> dict[str, float]:  # fmt: skip
    """``R²_max`` per parameter: a set encoder fitted on the contexts of ``identify_tasks`` other tasks
    inside and as many outside the ranges (drawn from ``seed + 1``, collected as the probe's are),
    scored on the probe's held-out half (the rows :func:`probe_r2` scores the latent on)."""
    tasks = sample_probe_tasks(family, identify_tasks, seed + 1)
    infer = lambda cx, cy, mask: model.infer_context(cx, cy, mask).q_zc  # noqa: E731
    with torch.no_grad():
        cx, cy = collect_online_context(family, tasks, infer, policy, n_context, seed + 2)
    _, test = stratified_halves(inside, torch.Generator().manual_seed(seed))
    held_out = torch.cat([data["cx"], data["cy"]], -1)[test]
    train_sets, train_params = torch.cat([cx, cy], -1), family.params_tensor(tasks)
    return r2_max(train_sets, train_params, held_out, params[test], family.param_names, seed)


def run_label(path: str) -> str:
    """A short name for a checkpoint: its ``seed*`` folder (benchmark layout) or ``version_*`` folder."""
    parts = Path(path).parts
    return next((p for p in reversed(parts) if p.startswith(("seed", "version_"))), Path(path).name)


def train_main_job(config: str, workdir: Path) -> str:
    """``train.py fit --config config`` run in ``workdir``; returns its ``last.ckpt``. A comma-separated
    ``config`` is layered (``conf/acrobot.yaml,tests/configs/tiny_dyna.yaml``: one ``--config`` each)."""
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"training {config} in {workdir} ...", file=sys.stderr, flush=True)
    layers = [arg for c in config.split(",") for arg in ("--config", str(ROOT / c))]
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", *layers, "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{proc.stderr[-4000:]}")
    return str(max(workdir.glob("runs/**/last.ckpt"), key=lambda p: p.stat().st_mtime))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", action="extend", default=[], help="Dyna checkpoints to probe")
    parser.add_argument("--config", nargs="+", action="extend", default=[], help="main-job configs: train, then probe")
    parser.add_argument("--tasks", type=int, default=64, help="tasks inside, and as many outside, the ranges")
    parser.add_argument("--context", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--identify-tasks", type=int, default=512,
                        help="tasks in and as many out of the ranges, to fit the R²_max encoder on")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the raw result here (docs/results/latent_probe_*.json)")
    add_note_argument(parser)
    args = parser.parse_args()
    if not args.ckpt and not args.config:
        parser.error("give --ckpt or --config")
    if args.tasks < 2:
        parser.error("--tasks must be at least 2 (each half needs inside and outside tasks)")
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(run_label(p), p) for p in args.ckpt]
        runs += [(Path(c.split(",")[0]).stem, train_main_job(c, Path(tmp) / str(i))) for i, c in enumerate(args.config)]
        for label, path in runs:
            run = load_dyna_checkpoint(path)
            model, policy, family = run.model, run.aps.policy, run.family
            tasks = sample_probe_tasks(family, args.tasks, args.seed)
            result = probe(model, policy, family, tasks, args.context, args.seed, args.identify_tasks)
            rows.append({"label": label, "path": path, "env": family.name, **result})
    print(f"# latent probe: {args.tasks} tasks inside and {args.tasks} outside the training ranges, "
          f"{args.context} context transitions, seed {args.seed}")  # fmt: skip
    print(probe_markdown(rows))
    for t in probe_targets(rows):
        print(f"- {t['target']}: {t['measured']} ({t['status']})")
    if args.out:
        settings = {k: getattr(args, k) for k in ("tasks", "context", "seed", "identify_tasks")}
        write_result(args.out, {"rows": rows, "settings": settings}, time.perf_counter() - start, args.note)


if __name__ == "__main__":
    main()
