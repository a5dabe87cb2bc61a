"""Fixed-seed fingerprints of every kind of run, to show that a refactor changes no number.

Runs ``train.py`` as a user would (so it works on any commit, whatever the code's layout), on tiny
budgets, one thread each, and fingerprints what comes out:

- a tiny Dyna run (GSSM + APS) of acrobot and of cart-pole, and one collecting 2 of its 3 tasks
  per iteration round robin (cart-pole's finer schedule): imagination (APS's weights), real
  collection (the buffers), the meta-test's online context and evaluation episodes
  (``metatest.json``), the TensorBoard image strip;
- GSSM-MPC and GSSM without amortization meta-testing the acrobot checkpoint (MPPI in the
  learned model, per-task policy search);
- one tiny run of each baseline learner: DR-PPO and PE-PPO (model-free episodes), L2A (MPPI in
  the MAML-adapted MLP), M-DPILCO (particle rollouts).

A fingerprint is the sorted SHA-256 of every tensor in the checkpoint (robust to renamed keys),
every number of ``metatest.json`` and every image in the TensorBoard events.

    python benchmarks/fixed_seed_outputs.py --out /tmp/after.json [--compare /tmp/before.json]

Prints one line per run (``same`` / ``DIFFERENT``) with ``--compare``; exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_DYNA = str(ROOT / "tests/configs/tiny_dyna.yaml")
LEARNER_COMMON = ["--model.budget.real_transitions", "700", "--model.budget.num_train_tasks", "3",
                  "--model.collection.random_steps_per_task", "40", "--model.collection.tasks_per_iteration", "3",
                  "--model.hidden_dim", "16", "--model.metatest.episodes", "2", "--model.metatest.context", "5",
                  "--model.metatest.tasks", "[interp-default, extrap-mixed]"]  # fmt: skip
PPO_TINY = ["--model.budget.real_transitions", "800", "--model.envs_per_iteration", "2", "--model.hidden_dim", "16",
            "--model.latent_dim", "3", "--model.metatest.episodes", "2", "--model.metatest.context", "5",
            "--model.metatest.tasks", "[interp-default, extrap-mixed]"]  # fmt: skip
RUNS = {
    "dyna_acrobot": ["fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY_DYNA],
    "dyna_cartpole_swingup": ["fit", "--config", str(ROOT / "conf/cartpole_swingup.yaml"), "--config", TINY_DYNA],
    "dyna_round_robin": ["fit", "--config", str(ROOT / "conf/cartpole_swingup.yaml"), "--config", TINY_DYNA,
                         "--dyna.init_args.collect_tasks_per_iteration", "2", "--trainer.max_epochs", "3"],
    "dr_ppo": ["fit", "--config", str(ROOT / "conf/baselines/acrobot_dr_ppo.yaml"), *PPO_TINY],
    "pe_ppo": ["fit", "--config", str(ROOT / "conf/baselines/acrobot_pe_ppo.yaml"), *PPO_TINY],
    "l2a": ["fit", "--config", str(ROOT / "conf/baselines/acrobot_l2a.yaml"), *LEARNER_COMMON,
            "--model.steps_per_iteration", "5", "--model.meta_batch", "4", "--model.mpc.horizon", "3",
            "--model.mpc.samples", "4"],
    "m_dpilco": ["fit", "--config", str(ROOT / "conf/baselines/acrobot_m_dpilco.yaml"), *LEARNER_COMMON,
                 "--model.members", "2", "--model.model_steps", "5", "--model.policy_steps", "3",
                 "--model.policy_rollouts", "8", "--model.horizon", "4", "--model.infer_steps", "3"],
}  # fmt: skip
TEST_TIME = {  # meta-test the tiny acrobot Dyna checkpoint
    "gssm_mpc": ["--model.mpc.samples", "4", "--model.mpc.horizon", "3"],
    "gssm_nonamortized": ["--model.search_iterations", "2", "--model.search_rollouts", "8"],
}
# not outputs of the run: provenance, and the scores derived from its numbers and committed references
PROVENANCE = ("commit", "command", "machine", "date", "scores")
COMMON = ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.version", "fixed"]


def train(cwd: Path, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"train.py {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")


def tensor_digests(value, out: list[str]) -> list[str]:
    """SHA-256 of every tensor in a nested checkpoint (keys ignored, so renames do not matter)."""
    if isinstance(value, torch.Tensor):
        out.append(hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16])
    elif isinstance(value, dict):
        for v in value.values():
            tensor_digests(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            tensor_digests(v, out)
    return out


def numbers(value) -> list[float]:
    """Every number in a JSON document, in order (names and layout ignored)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for k in sorted(value) if k not in PROVENANCE for n in numbers(value[k])]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


def fingerprint(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = {}
    ckpt = log_dir / "checkpoints/last.ckpt"
    if ckpt.exists():
        result["tensors"] = sorted(tensor_digests(torch.load(ckpt, map_location="cpu", weights_only=False), []))
    report = log_dir / "metatest.json"
    result["metatest"] = numbers(json.loads(report.read_text()))
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    result["images"] = sorted(hashlib.sha256(im.encoded_image_string).hexdigest()[:16]
                              for tag in events.Tags()["images"] for im in events.Images(tag))  # fmt: skip
    return result


def run(name: str, workdir: Path) -> tuple[str, dict]:
    cwd = workdir / name
    cwd.mkdir(parents=True)
    if name in TEST_TIME:
        ckpt = workdir / "dyna_acrobot/runs/acrobot/fixed/checkpoints/last.ckpt"
        train(cwd, "test", "--config", str(ROOT / f"conf/baselines/acrobot_{name}.yaml"), "--model.checkpoint",
              str(ckpt), "--model.metatest.episodes", "2", "--model.metatest.context", "5", *TEST_TIME[name],
              "--trainer.enable_progress_bar", "false")  # fmt: skip
    else:
        train(cwd, *RUNS[name], *COMMON)
    (log_dir,) = [p.parent for p in cwd.glob("runs/**/metatest.json")]
    return name, fingerprint(log_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="where to write the fingerprints (JSON)")
    parser.add_argument("--compare", help="fingerprints of another commit to compare against")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each on one thread)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with ThreadPoolExecutor(args.jobs) as pool:
            results = dict(pool.map(lambda n: run(n, workdir), RUNS))
            results.update(pool.map(lambda n: run(n, workdir), TEST_TIME))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    Path(args.out).write_text(json.dumps({"commit": commit.stdout.strip(), "runs": results}, indent=1))
    if not args.compare:
        for name, r in results.items():
            print(f"{name}: {len(r.get('tensors', []))} tensors, {len(r['metatest'])} meta-test numbers, "
                  f"{len(r['images'])} images")  # fmt: skip
        return
    before = json.loads(Path(args.compare).read_text())
    differ = 0
    for name, r in results.items():
        parts = [part for part in ("tensors", "metatest", "images") if r.get(part) != before["runs"][name].get(part)]
        differ += bool(parts)
        print(f"{name}: {'DIFFERENT (' + ', '.join(parts) + ')' if parts else 'same'}")
    print(f"{before['commit']} -> {commit.stdout.strip()}: {differ} of {len(results)} runs differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
