"""The exact-model ceiling and the no-adaptation floor of every test task (docs/DESIGN.md §9).

Per task of a classic family: MPPI over the family's own equations (:meth:`TaskFamily.simulate`,
equal to ``env.step``) with the task's **true** physics, executed in the real env through the
meta-test's own episode loop (:func:`evaluation.protocol.evaluation_returns`, the real reward) —
the *ceiling*; the same planner with the physics of the training range's centre for every task —
the *floor* (what a controller that ignores the task gets); and a uniform-random policy. On
cart-pole the ceiling is per task the better of that planner and a policy trained by APS's PPO on
the tasks' exact equations and true physics (``GUIDES``), the floor the better of the planner and
a policy trained on the centre physics. The ceiling is run again with twice the compute (twice the
candidates per round, twice the policy's PPO iterations);
``doubling_gain`` says how far from converged it is (DESIGN §9 asks < 0.01 per step).

    python benchmarks/ceiling.py                                 # both families, test tasks
    python benchmarks/ceiling.py --tasks train --envs acrobot    # choose settings on training tasks

Writes ``docs/results/ceiling_<env>.json`` (:mod:`raw_results`; ``--out`` to change the folder),
read by the reports' normalised score ``(method − random) / (ceiling − random)`` and adaptation gain
``(method − floor) / (ceiling − floor)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from gap_ladder import train_exact_search  # noqa: E402
from raw_results import RESULTS, add_note_argument, write_result  # noqa: E402

from datamodules.collection import collect_transitions  # noqa: E402
from envs import Task, TaskFamily, make_family  # noqa: E402
from envs.acrobot import GRAVITY, LINK_COM_POS_2, LINK_LENGTH_2, LINK_MOI, AcrobotFamily  # noqa: E402
from envs.rollout import StepPolicy, Trajectory, agent_policy  # noqa: E402
from evaluation.protocol import evaluation_returns, uniform_random_policy  # noqa: E402
from modules.methods.gssm_aps.exact_policy_search import physics_code  # noqa: E402
from modules.policies.actor_critic import ActorCritic  # noqa: E402
from modules.policies.mppi import MPPI, MPPISettings  # noqa: E402
from modules.policies.ppo import PPOSettings  # noqa: E402


@dataclass(frozen=True)
class PlannerSettings(MPPISettings):
    """MPPI's settings over the exact equations, plus acrobot's shaped terminal term."""

    energy_weight: float = 0.0  # acrobot: −w·|E − E_top| / E_top at the horizon's end rewards pumping

    def doubled(self) -> PlannerSettings:
        return PlannerSettings(**{**asdict(self), "samples": 2 * self.samples})


def acrobot_energy_gap(obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``|E − E_top| / E_top`` of acrobot states ``obs [..., 6]``: the mechanical energy (the
    Lagrangian's kinetic term of :meth:`AcrobotEnv.dsdt` plus gravity) against resting upright."""
    col = lambda name: params[..., AcrobotFamily.param_names.index(name)].double()  # noqa: E731
    m1, m2, l1 = col("link1_mass"), col("link2_mass"), col("link1_length")
    lc1, lc2, i1, i2 = 0.5 * l1, LINK_COM_POS_2, LINK_MOI * m1 * l1**2, LINK_MOI * m2 * LINK_LENGTH_2**2
    c1, s1, c2, s2, dtheta1, dtheta2 = obs.double().unbind(-1)
    d11 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * c2) + i1 + i2
    d12 = m2 * (lc2**2 + l1 * lc2 * c2) + i2
    d22 = m2 * lc2**2 + i2
    kinetic = 0.5 * d11 * dtheta1**2 + d12 * dtheta1 * dtheta2 + 0.5 * d22 * dtheta2**2
    potential = -(m1 * lc1 + m2 * l1) * GRAVITY * c1 - m2 * lc2 * GRAVITY * (c1 * c2 - s1 * s2)
    top = (m1 * lc1 + m2 * l1 + m2 * lc2) * GRAVITY
    return (kinetic + potential - top).abs() / top


# chosen on 6 training tasks (``--tasks train``, 1 episode each; docs/TUNING.md), never on the test tasks
SETTINGS = {
    "cartpole_swingup": PlannerSettings(horizon=50, samples=800, iterations=6, noise_std=0.5, temperature=0.3),
    "acrobot": PlannerSettings(horizon=40, samples=800, iterations=3, noise_std=0.7, temperature=0.1,
                               energy_weight=10.0),
}


def centre_physics(family: TaskFamily) -> dict[str, float]:
    """The centre of the training ranges: the one model a non-adaptive controller would use."""
    return {name: (low + high) / 2 for name, (low, high) in family.train_ranges.items()}


@dataclass(frozen=True)
class GuideSettings:
    """The policy the ceiling sets beside MPPI: APS's PPO (:class:`ExactDynamicsSearch`, trained as the
    gap ladder's rung a is) on each task's own equations and physics, from the states of ``start_steps``
    random-action real steps per task."""

    iterations: int = 1200
    hidden_dim: int = 64
    init_log_std: float = -0.5
    horizon: int = 50
    rollouts_per_task: int = 64
    min_action_std: float = 0.2
    entropy_coef: float = 0.02
    start_steps: int = 400

    def doubled(self) -> GuideSettings:
        return GuideSettings(**{**asdict(self), "iterations": 2 * self.iterations})


# cart-pole's MPPI stops below the learned policies on the short light poles, where a policy trained on
# the exact equations does not (TUNING.md); on acrobot that policy stays far below MPPI (the gap
# ladder's rung a), so acrobot's ceiling is MPPI's alone
GUIDES = {"cartpole_swingup": GuideSettings()}


def train_guide(family: TaskFamily, tasks: list[Task], settings: GuideSettings, seed: int) -> ActorCritic:
    """``π(a | s, code(physics))`` trained by PPO on the exact equations of ``tasks`` (their true physics)."""
    start = collect_transitions(family, tasks, settings.start_steps, seed=seed).obs  # [T, S, O]
    hparams = {**asdict(settings), "ppo": PPOSettings(entropy_coef=settings.entropy_coef)}
    return train_exact_search(family, family.params_tensor(tasks), start, hparams, settings.iterations, seed).policy


def guide_policy(family: TaskFamily, physics: torch.Tensor, episodes: int, guide: ActorCritic) -> StepPolicy:
    """The guide's mean action on the ``T × episodes`` envs, each reading its task's physics code."""
    return agent_policy(guide, physics_code(family, physics.repeat_interleave(episodes, 0)), deterministic=True)


def exact_planner(family: TaskFamily, physics: torch.Tensor, episodes: int, settings: PlannerSettings,
                  seed: int) -> StepPolicy:  # fmt: skip
    """A step policy for the ``T × episodes`` envs of :func:`evaluation_returns` (env ``i·E + e`` runs
    task ``i``) that plans with physics ``physics [T, P]`` by MPPI over :meth:`TaskFamily.simulate`."""
    planner = MPPI(family.act_dim, settings)
    params = physics.repeat_interleave(episodes, 0).repeat_interleave(settings.samples, 0)  # row n·K + k
    generator = torch.Generator().manual_seed(seed)

    def returns(start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        obs, alive = start, torch.ones(start.shape[0])
        total = torch.zeros(start.shape[0], dtype=torch.float64)
        for action in actions:  # sequential in time; every candidate of every env in one tensor
            nxt = family.simulate(obs, action, params)
            total += alive * family.reward(obs, action, nxt, params).double()
            alive = alive * ~family.terminated(nxt, params)
            obs = nxt
        if settings.energy_weight:
            total -= alive * settings.energy_weight * acrobot_energy_gap(obs, params)
        return total.float()

    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict]:
        return planner.plan(obs, returns, generator), {}

    return act


def per_step(family: TaskFamily, tasks: list[Task], episodes: int, seed: int, policy: StepPolicy) -> list[float]:
    """Mean reward per step of each task (the meta-test's measure: return / episode length)."""
    returns = evaluation_returns(family, tasks, episodes, seed, policy)
    return (returns.mean(1) / family.episode_length).tolist()


def measure(env: str, tasks_kind: str, episodes: int, seed: int, settings: PlannerSettings,
            guide: GuideSettings | None, doubling: bool) -> dict:  # fmt: skip
    """Random, floor and ceiling (and the ceiling at twice the compute) per task and split. With a
    ``guide``, the ceiling is per task the better of MPPI and a policy trained by PPO on the planned
    tasks' exact equations (keys ``ceiling_mppi``, ``ceiling_policy``), the floor the better of MPPI
    and a policy trained on the centre physics alone."""
    family = make_family(env)
    tasks = family.test_tasks() if tasks_kind == "test" else family.train_tasks(6, seed=1000 + seed, design="uniform")
    true = family.params_tensor(tasks)
    centre_task = family.make_task("centre", "interpolation", **centre_physics(family))
    centre = family.params_tensor([centre_task]).expand_as(true)
    # the floor's policy trains on one copy of the centre task per task: as many rollouts per iteration
    runs = {"ceiling": (true, tasks, settings, guide), "floor": (centre, [centre_task] * len(tasks), settings, guide)}
    if doubling:
        runs["ceiling_doubled"] = (true, tasks, settings.doubled(), guide and guide.doubled())
    result: dict = {"random": per_step(family, tasks, episodes, seed, uniform_random_policy(family.act_dim, seed))}
    seconds = {}

    def run(name: str, policy: StepPolicy, t0: float) -> None:
        result[name] = per_step(family, tasks, episodes, seed, policy)
        seconds[name] = time.perf_counter() - t0
        print(f"{env} {name}: " + " ".join(f"{t.name} {v:.3f}" for t, v in zip(tasks, result[name], strict=True))
              + f" ({seconds[name]:.0f} s)", flush=True)  # fmt: skip

    for name, (physics, guide_tasks, s, g) in runs.items():
        run(f"{name}_mppi" if g else name, exact_planner(family, physics, episodes, s, seed), time.perf_counter())
        if g:
            t0 = time.perf_counter()
            policy = train_guide(family, guide_tasks, g, seed)
            run(f"{name}_policy", guide_policy(family, physics, episodes, policy), t0)
            result[name] = [max(pair) for pair in zip(result[f"{name}_mppi"], result[f"{name}_policy"], strict=True)]
    per_task = {t.name: {"split": t.split, "params": t.parameters, **{k: v[i] for k, v in result.items()}}
                for i, t in enumerate(tasks)}  # fmt: skip
    splits = {}
    for split in ("interpolation", "extrapolation"):
        rows = [r for r in per_task.values() if r["split"] == split]
        if rows:
            splits[split] = {k: float(np.mean([r[k] for r in rows])) for k in result}
    if doubling:
        for r in [*per_task.values(), *splits.values()]:
            r["doubling_gain"] = r["ceiling_doubled"] - r["ceiling"]
    return {"env": env, "tasks": tasks_kind, "episodes": episodes, "seed": seed, "settings": asdict(settings),
            "guide": guide and asdict(guide), "centre_physics": centre_physics(family), "per_task": per_task,
            "splits": splits, "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(SETTINGS))
    parser.add_argument("--tasks", choices=("test", "train"), default="test",
                        help="train: 6 training tasks, to choose the planner's settings")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes per task and run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-doubling", action="store_true", help="skip the run with twice the compute")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="override a planner setting")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON results")
    add_note_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: one thread is faster, and two runs share the 2 cores
    for env in args.envs:
        overrides = {k: type(getattr(SETTINGS[env], k))(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        settings = PlannerSettings(**{**asdict(SETTINGS[env]), **overrides})
        start = time.perf_counter()
        result = measure(env, args.tasks, args.episodes, args.seed, settings, GUIDES.get(env),
                         doubling=not args.no_doubling)
        for split, row in result["splits"].items():
            print(f"{env} {split}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        if args.tasks == "test" and not args.set:  # the committed references: the shipped settings only
            write_result(args.out / f"ceiling_{env}.json", result, time.perf_counter() - start, args.note)


if __name__ == "__main__":
    main()
