"""`ExactSACSearch`: SAC as APS's policy optimiser on the exact equations with the true physics in place of
GSSM and ``z_c`` — the gap ladder's first rung (DESIGN §9) for the off-policy candidate of DESIGN §3.5."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from common.seeding import IMAGINATION, derive_seed
from common.validation import INTEGER_1, SEED, Range, check_settings
from envs import Task, TaskFamily
from modules.methods.gssm_aps.exact_policy_search import physics_code
from modules.models.model_env import ModelEnv, exact_next_state
from modules.policies.n_step import n_step_return
from modules.policies.sac import SACLearner, SACSettings

Shaping = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs [B, O], next_obs [B, O], params [B, P]) → [B]``: a term added to the rewards the learner stores."""


def start_states(family: TaskFamily, tasks: list[Task], n: int, seed: int) -> torch.Tensor:
    """``[T, n, O]``: ``n`` reset observations of each task's real env, its own start distribution
    (task ``i``'s env seeded with ``seed + i``, then reset ``n − 1`` more times)."""
    out = []
    for i, task in enumerate(tasks):
        env = family.make_env(task)
        first = env.reset(seed=seed + i)[0]
        out.append(torch.as_tensor(np.stack([first, *(env.reset()[0] for _ in range(n - 1))])))
        env.close()
    return torch.stack(out).float()


class ExactSACSearch:
    """One policy ``π(a | s, code(physics))`` trained by SAC on ``T × envs_per_task`` trajectories of the
    exact equations, stepped together as one batch.

    Each :meth:`step` acts in every trajectory (uniform random actions for the first ``warmup_steps``,
    then the stochastic policy), steps :func:`~modules.models.model_env.exact_next_state` with each
    trajectory's task physics (:class:`~modules.models.model_env.ModelEnv`: the projection, reward and
    termination of imagination), stores the transitions in the learner's replay (``n_step``-step ones,
    :func:`~modules.policies.n_step.n_step_return`, once their ``n_step`` steps are known) and takes
    ``updates_per_step`` SAC updates. A trajectory restarts when it terminates or has run
    ``episode_length`` steps (a time-limit cut, bootstrapped by the critics): from a start state of its
    task (``start_obs``, e.g. :func:`start_states`), or, with probability ``restart_from_replay``, from a
    state the policy visited, drawn from the replay with its task — MBPO's short branches from visited
    states, which start near the top once the policy gets there (random start states never do). A
    ``shaping`` term ``F(obs [B, O], next_obs [B, O], params [B, P]) → [B]`` is added to the rewards the
    learner stores (the rewards :meth:`step` returns and every score stay the env's): a potential-based
    ``F = γ Φ(s') − Φ(s)`` leaves the optimal policy unchanged (Ng et al. 1999) and can tell the critics
    early what the reward sees late (acrobot's energy); a cost changes the objective, as the ceiling
    planner's terminal energy term does.

    Args:
        family: a classic family (it needs :meth:`TaskFamily.simulate`); params: ``[T, P]`` physics of the
            training tasks; start_obs: ``[T, N, O]`` start states of each.
        envs_per_task: trajectories per task; episode_length: steps before a restart (None: the family's).
        restart_from_replay: the share of restarts from visited states (0: always from ``start_obs``).
        warmup_steps: random-action steps before the first update; updates_per_step: SAC updates per step.
        n_step: rewards each stored transition sums before its target bootstraps (1: SAC's one-step target).
        sac: :class:`SACSettings` (or a mapping of its fields); seed: the networks', the replay's and the
            trajectories' randomness (:data:`~common.seeding.IMAGINATION`); shaping: the reward term.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> tasks = fam.train_tasks(2, seed=0)
        >>> search = ExactSACSearch(fam, fam.params_tensor(tasks), start_states(fam, tasks, 3, seed=0),
        ...                         envs_per_task=4, warmup_steps=2, sac={"batch_size": 8, "hidden_dim": 16})
        >>> search.train(3)["reward_per_step"] <= 0, len(search.learner.replay)
        (True, 24)
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "envs_per_task": INTEGER_1, "episode_length": Range(low=1, integer=True, none="the family's episode length"),
        "restart_from_replay": Range(low=0, high=1, special={0: "every restart from the start states"}),
        "warmup_steps": Range(low=0, integer=True, special={0: "no random-action warm-up"}),
        "updates_per_step": INTEGER_1, "n_step": INTEGER_1, "seed": SEED,
    }  # fmt: skip

    def __init__(self, family: TaskFamily, params: torch.Tensor, start_obs: torch.Tensor, envs_per_task: int = 16,
                 episode_length: int | None = None, restart_from_replay: float = 0.0, warmup_steps: int = 25,
                 updates_per_step: int = 4, n_step: int = 1, sac: SACSettings | dict | None = None, seed: int = 0,
                 shaping: Shaping | None = None):  # fmt: skip
        given = locals()
        check_settings(ExactSACSearch, given)
        self.hparams = {name: given[name] for name in self.RANGES}  # what a result records
        self.family, self.params, self.start_obs = family, params, start_obs
        self.codes = physics_code(family, params)  # [T, Z]
        self.episode_length = episode_length or family.episode_length
        self.restart_from_replay, self.warmup_steps = restart_from_replay, warmup_steps
        self.updates_per_step, self.n_step = updates_per_step, n_step
        self.learner = SACLearner(family.obs_dim, self.codes.shape[1], family.act_dim, sac, seed)
        self.shaping = shaping
        self.policy = self.learner.policy
        self.generator = torch.Generator().manual_seed(derive_seed(IMAGINATION, seed))
        self.task = torch.arange(len(params)).repeat_interleave(envs_per_task)  # [B], a trajectory's task
        self.obs = self.start_obs[self.task, self.draw(self.start_obs.shape[1], len(self.task))]  # [B, O]
        self.clock = torch.zeros(len(self.task), dtype=torch.long)  # steps since each trajectory's restart
        self.window: list[dict[str, torch.Tensor]] = []  # the last steps, not yet stored as n-step transitions
        self.steps = 0

    def draw(self, high: int, n: int) -> torch.Tensor:
        """``n`` indices uniform in ``[0, high)`` from the trajectories' generator."""
        return torch.randint(high, (n,), generator=self.generator)

    def step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step of every trajectory and its updates: the (unshaped) rewards ``[B]`` and the last update's
        statistics."""
        code = self.codes[self.task]
        if self.steps < self.warmup_steps:
            action = torch.rand(len(self.task), self.family.act_dim, generator=self.generator) * 2 - 1
        else:
            action = self.policy.act(self.obs, code, generator=self.generator)
        params = self.params[self.task]  # a ModelEnv a step: restarts from the replay may change a row's task
        env = ModelEnv(exact_next_state(self.family, params), self.family, params)
        env.reset(self.obs)
        result = env.step(action)
        reward = result.reward
        if self.shaping is not None:
            reward = reward + self.shaping(self.obs, result.next_obs, params)
        self.clock += 1
        done = result.terminated | (self.clock >= self.episode_length)
        self.window.append({"obs": self.obs, "code": code, "action": action, "reward": reward, "done": done,
                            "next_obs": result.next_obs, "terminated": result.terminated,
                            "task": self.task.clone()})  # fmt: skip
        if len(self.window) == self.n_step:
            self.store_oldest()
        self.obs = result.next_obs.clone()
        self.restart(done)
        self.steps += 1
        stats: dict[str, torch.Tensor] = {}
        if self.steps > self.warmup_steps:
            for _ in range(self.updates_per_step):
                stats = self.learner.update()
        return result.reward, stats

    def store_oldest(self) -> None:
        """The window's oldest step into the replay as an ``n``-step transition: its discounted rewards up to
        ``n_step`` steps or its episode's end, and the state it bootstraps from."""
        w = {k: torch.stack([s[k] for s in self.window]) for k in ("reward", "done", "next_obs", "terminated")}
        total, steps = n_step_return(w["reward"], w["done"], self.learner.settings.gamma)
        last, rows = steps - 1, torch.arange(len(steps))
        first = self.window.pop(0)
        self.learner.add(first["obs"], first["code"], first["action"], total, w["next_obs"][last, rows],
                         w["terminated"][last, rows], steps, task=first["task"])  # fmt: skip

    def restart(self, done: torch.Tensor) -> None:
        """Move the ``done [B]`` trajectories to new start states: visited ones from the replay (with their
        task) with probability ``restart_from_replay``, else their task's start states."""
        rows = done.nonzero()[:, 0]
        if len(rows) == 0:
            return
        from_replay = torch.rand(len(rows), generator=self.generator) < self.restart_from_replay
        from_replay &= len(self.learner.replay) > 0  # n-step transitions reach the replay n − 1 steps late
        fresh = rows[~from_replay]
        self.obs[fresh] = self.start_obs[self.task[fresh], self.draw(self.start_obs.shape[1], len(fresh))]
        branch = rows[from_replay]
        if len(branch):
            visited = self.learner.replay.sample(len(branch), self.generator)
            self.obs[branch], self.task[branch] = visited["obs"], visited["task"]
        self.clock[rows] = 0

    def train(self, steps: int) -> dict[str, float]:
        """``steps`` more steps; the mean reward per step of the trajectories and the last update's statistics."""
        rewards = torch.zeros(())
        stats: dict[str, torch.Tensor] = {}
        for _ in range(steps):
            reward, step_stats = self.step()
            rewards += reward.mean()
            stats = step_stats or stats
        return {"reward_per_step": float(rewards / steps), **{k: float(v) for k, v in stats.items()}}
