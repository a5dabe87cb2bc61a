"""Where GSSM+APS loses to the exact-model ceiling: the gap ladder of a main-job checkpoint (DESIGN §9).

    python benchmarks/gap_ladder.py runs/acrobot/version_0/checkpoints/last.ckpt [CKPT ...]
        [--episodes 10] [--context 50] [--large-context 500] [--exact-iterations N] [--seed 0]
    python benchmarks/gap_ladder.py --rescore docs/results/gap_ladder_*.json   # against a new ceiling

On every test task of the checkpoint's family, each rung as a per-step reward, its normalised score
``(x − random) / (ceiling − random)`` and its adaptation gain ``(x − floor) / (ceiling − floor)``
(ceiling and floor: ``docs/results/ceiling_<env>.json``):

* **a, policy search**: APS's PPO (the checkpoint's policy and PPO settings, as many PPO iterations
  as the run took unless ``--exact-iterations``) trained from scratch on the exact equations of the
  run's training tasks, from the run's real buffer states, with the true physics (scaled to
  ``[-1, 1]`` over the training ranges) in place of ``z_c``; tested with each test task's true physics;
* **b, large context**: the trained policy with ``z_c`` inferred from ``--large-context`` online
  transitions of the task (the meta-test's collection, only longer);
* **c, adaptation**: the meta-test itself (``--context`` online transitions, DESIGN §6);
* **d, wrong latent**: the trained policy with every task given the latent rung c inferred for the
  family's default task (the latent ablation; the default task itself is unchanged);
* **imagined − real**: the per-step reward the policy's rung-c episodes get in GSSM (mean next
  states, the same start states, the same latent and context) minus what they get in the real env.

The evaluation episodes act with the mean action, from the start states of the meta-test's seed.
Prints a table per checkpoint and writes ``docs/results/gap_ladder_<env>_<run>.json`` (:mod:`raw_results`;
``--out``, ``--label`` for ``<run>``); ``--rescore`` keeps a file's provenance and adds ``rescored``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from raw_results import RESULTS, add_note_argument, provenance, write_result  # noqa: E402

from envs import Task, TaskFamily, make_family  # noqa: E402
from envs.rollout import TaskVectorEnv, agent_policy, rollout  # noqa: E402
from evaluation.protocol import (  # noqa: E402
    collect_online_context,
    evaluation_returns,
    summarise,
    uniform_random_policy,
)
from evaluation.reference_scores import load_references, task_scores  # noqa: E402
from modules.methods.gssm_aps.aps import APSModule  # noqa: E402
from modules.methods.gssm_aps.dyna_checkpoint import load_dyna_checkpoint  # noqa: E402
from modules.methods.gssm_aps.exact_policy_search import ExactDynamicsSearch, physics_code  # noqa: E402
from modules.methods.gssm_aps.policy_phase import lightning_info_silenced  # noqa: E402
from modules.models.meta_dynamics_model import MetaDynamicsModel  # noqa: E402
from modules.models.model_env import ModelEnv, meta_dynamics_next_state  # noqa: E402
from modules.policies.actor_critic import ActorCritic  # noqa: E402
from train import quiet_lightning_notes  # noqa: E402

RUNGS = ("a_policy_search", "b_large_context", "c_adaptation", "d_wrong_latent")
DEFAULT_TASK = "interp-default"


@dataclass(frozen=True)
class LadderSettings:
    """Sizes of one ladder measurement (the defaults are the benchmark's)."""

    episodes: int = 10
    context: int = 50
    large_context: int = 500
    exact_iterations: int | None = None  # None: the run's own number of PPO iterations
    seed: int = 0


def train_exact_search(family: TaskFamily, params: torch.Tensor, start_obs: torch.Tensor, aps_hparams: dict,
                       iterations: int, seed: int) -> ExactDynamicsSearch:  # fmt: skip
    """Rung a's policy: APS's policy and PPO settings, ``iterations`` PPO iterations on the exact equations."""
    keys = ("hidden_dim", "init_log_std", "min_action_std", "horizon", "rollouts_per_task", "ppo")
    search = ExactDynamicsSearch(family, params, start_obs, seed=seed, **{k: aps_hparams[k] for k in keys})
    with lightning_info_silenced():
        pl.Trainer(max_epochs=iterations, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu", devices=1).fit(search)  # fmt: skip
    return search.eval()


@torch.no_grad()
def imagined_per_step(model: MetaDynamicsModel, policy: ActorCritic, family: TaskFamily, tasks: list[Task],
                      encoding, latent: torch.Tensor, episodes: int, seed: int) -> np.ndarray:  # fmt: skip
    """``[T]`` per-step reward of the mean-action policy in the model, from the real envs' start states
    of ``seed`` (the evaluation episodes'), each task with its context ``encoding`` and ``latent [T, Z]``."""
    env = TaskVectorEnv(family, [t for t in tasks for _ in range(episodes)], seed)
    start = env.reset()
    env.close()
    rep = latent.repeat_interleave(episodes, 0)
    params = family.params_tensor(tasks).repeat_interleave(episodes, 0)
    imagined = ModelEnv(meta_dynamics_next_state(model, encoding, rep, episodes), family, params)
    traj = rollout(imagined, agent_policy(policy, rep, deterministic=True), imagined.reset(start),
                   family.episode_length)  # fmt: skip
    return (traj.reward.sum(0) / family.episode_length).view(len(tasks), episodes).mean(1).numpy()


def gap_ladder(model: MetaDynamicsModel, policy: ActorCritic, family: TaskFamily, tasks: list[Task],
               exact: ExactDynamicsSearch | None, settings: LadderSettings) -> dict:  # fmt: skip
    """Every rung's per-step reward ``{rung: [T]}`` on ``tasks``, the random policy's and the
    imagined − real gap (see the module docstring); rung a only with a trained ``exact`` search."""
    s, e = settings, settings.episodes
    infer = lambda cx, cy, mask: model.infer_context(cx, cy, mask).q_zc  # noqa: E731
    per_step = lambda act: evaluation_returns(family, tasks, e, s.seed + 1, act).mean(1) / family.episode_length  # noqa: E731
    act_on = lambda z: agent_policy(policy, z.repeat_interleave(e, 0), deterministic=True)  # noqa: E731
    out: dict[str, np.ndarray] = {"random": per_step(uniform_random_policy(family.act_dim, s.seed))}
    if exact is not None:
        code = physics_code(family, family.params_tensor(tasks))
        out["a_policy_search"] = per_step(agent_policy(exact.policy, code.repeat_interleave(e, 0), deterministic=True))
    for rung, n in (("b_large_context", s.large_context), ("c_adaptation", s.context)):
        cx, cy = collect_online_context(family, tasks, infer, policy, n, s.seed)
        with torch.no_grad():
            encoding = model.infer_context(cx, cy, torch.ones(cx.shape[:2], dtype=torch.bool))
        out[rung] = per_step(act_on(encoding.q_zc.mean))
    latent = encoding.q_zc.mean  # rung c's
    names = [t.name for t in tasks]
    donor = names.index(DEFAULT_TASK) if DEFAULT_TASK in names else 0
    out["d_wrong_latent"] = per_step(act_on(latent[donor].expand_as(latent)))
    out["imagined_minus_real"] = (
        imagined_per_step(model, policy, family, tasks, encoding, latent, e, s.seed + 1) - out["c_adaptation"]
    )
    return {k: [float(x) for x in v] for k, v in out.items()}


def scored(family: TaskFamily, tasks: list[Task], ladder: dict, episodes: int) -> dict:
    """Per task: every rung's per-step reward, normalised score and adaptation gain; per split, the means."""
    references = load_references(family.name)
    gap = ladder["imagined_minus_real"]
    per_task = {t.name: {"split": t.split, "params": t.parameters, "imagined_minus_real": gap[i]}
                for i, t in enumerate(tasks)}  # fmt: skip
    for rung in (r for r in RUNGS if r in ladder):
        rows = [*summarise(rung, tasks, np.array(ladder[rung])[:, None] * family.episode_length, family.episode_length),
                *summarise("random", tasks, np.array(ladder["random"])[:, None] * family.episode_length,
                           family.episode_length)]  # fmt: skip
        scores = task_scores(rows, references).get(rung, {})
        for i, t in enumerate(tasks):
            per_task[t.name][rung] = {"reward_per_step": ladder[rung][i], **scores.get(t.name, {})}
    splits = {}
    for split in ("interpolation", "extrapolation"):
        rows = [r for r in per_task.values() if r["split"] == split]
        if not rows:
            continue
        splits[split] = {"imagined_minus_real": float(np.mean([r["imagined_minus_real"] for r in rows]))}
        for rung in (r for r in RUNGS if r in ladder):
            for key in ("reward_per_step", "normalised_score", "adaptation_gain"):
                values = [r[rung][key] for r in rows if r[rung].get(key) is not None]
                if values:
                    splits[split][f"{rung}/{key}"] = float(np.mean(values))
    return {"per_task": per_task, "splits": splits, "episodes": episodes, "raw": ladder}


def rescore(path: Path) -> dict:
    """A committed ladder result scored again from its ``raw`` rewards against today's references
    (a refined ceiling changes the scores, not the measurement)."""
    result = json.loads(path.read_text())
    family = make_family(result["env"])
    tasks = {t.name: t for t in family.test_tasks()}
    result.update(scored(family, [tasks[name] for name in result["per_task"]], result["raw"], result["episodes"]))
    return result


def measure(path: str, settings: LadderSettings) -> dict:
    run = load_dyna_checkpoint(path)
    family = run.family
    loop = torch.load(path, map_location="cpu", weights_only=True)["callbacks"]["DynaLoop"]
    source = APSModule.source_from_checkpoint(path, family.name)
    filled = int(source.buffer.size.min())
    iterations = settings.exact_iterations or int(loop["aps_iterations"])
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    exact = train_exact_search(family, source.params, source.buffer.obs[:, :filled], dict(run.aps.hparams),
                               iterations, settings.seed) if iterations > 0 else None  # fmt: skip
    seconds = {"a_policy_search_training": time.perf_counter() - t0}
    tasks = family.test_tasks()
    t0 = time.perf_counter()
    ladder = gap_ladder(run.model, run.aps.policy, family, tasks, exact, settings)
    seconds["rungs"] = time.perf_counter() - t0
    return {"env": family.name, "checkpoint": str(path), "real_transitions": run.real_transitions,
            "exact_iterations": iterations, "settings": asdict(settings), "seconds": seconds,
            **scored(family, tasks, ladder, settings.episodes)}  # fmt: skip


def print_table(result: dict) -> None:
    print(f"\n{result['env']} — {result['checkpoint']} ({result['real_transitions']} real transitions)")
    print(f"{'task':<20}" + "".join(f"{r[:16]:>18}" for r in RUNGS) + f"{'imagined-real':>15}")
    for name, row in result["per_task"].items():
        cells = "".join(f"{row[r]['reward_per_step']:>8.3f} ({row[r].get('normalised_score') or float('nan'):5.2f})"
                        if r in row else f"{'':>18}" for r in RUNGS)  # fmt: skip
        print(f"{name:<20}{cells}{row['imagined_minus_real']:>15.3f}")
    for split, row in result["splits"].items():
        print(f"{split}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--rescore", nargs="+", type=Path, default=[], metavar="JSON",
                        help="score committed results again against today's ceiling (no rerun)")  # fmt: skip
    for field, default in asdict(LadderSettings()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_note_argument(parser)
    parser.add_argument("--label", help="the result file's suffix (default: the run folder's name)")
    args = parser.parse_args()
    quiet_lightning_notes()
    torch.set_num_threads(1)  # small tensors: one thread is faster, and two runs share the 2 cores
    settings = LadderSettings(**{f: getattr(args, f) for f in asdict(LadderSettings())})
    for path in args.rescore:  # the measurement's provenance stays; the rescoring adds its own
        start = time.perf_counter()
        result = rescore(path)
        print_table(result)
        path.write_text(json.dumps({**result, "rescored": provenance(time.perf_counter() - start, args.note)},
                                   indent=1) + "\n")  # fmt: skip
    for path in args.checkpoints:
        start = time.perf_counter()
        result = measure(path, settings)
        print_table(result)
        label = args.label or Path(path).resolve().parents[1].name  # runs/<env>/<version>/checkpoints/last.ckpt
        write_result(args.out / f"gap_ladder_{result['env']}_{label}.json", result, time.perf_counter() - start,
                     args.note)  # fmt: skip


if __name__ == "__main__":
    main()
