"""`SACLearner`: soft actor-critic (Haarnoja et al. 2018, CleanRL's continuous SAC) for one amortized
policy ``π(a | s, code)`` — an off-policy optimiser for APS (DESIGN §3.5), whose critics carry the horizon."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from common.seeding import POLICY_INIT, REPLAY, derive_seed
from common.settings import Settings
from common.validation import DISCOUNT, INTEGER_1, POSITIVE, Range
from modules.blocks import EnsembleMLP
from modules.policies.replay_buffer import ReplayBuffer
from modules.policies.tanh_gaussian_policy import TanhGaussianPolicy


@dataclass(frozen=True)
class SACSettings(Settings):
    """SAC's hyperparameters as one block, ``sac: {gamma: 0.99, batch_size: 256, ...}`` (CleanRL's names
    where it has one).

    Attributes:
        gamma: discount; tau: Polyak step of the target critics (``θ' ← (1 − τ) θ' + τ θ``).
        actor_lr: Adam's step size of the actor and the temperature; critic_lr: of the twin critics.
        batch_size: transitions per update; hidden_dim: width of the actor's and each critic's 2 hidden layers.
        buffer_size: transitions the replay keeps; init_alpha: the entropy temperature α at the start.
        target_entropy: the entropy α is tuned to hold (None: minus the number of action dimensions, SAC's).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "gamma": DISCOUNT, "tau": Range(low=0, high=1, open_low=True), "actor_lr": POSITIVE, "critic_lr": POSITIVE,
        "batch_size": INTEGER_1, "hidden_dim": INTEGER_1, "buffer_size": INTEGER_1, "init_alpha": POSITIVE,
        "target_entropy": Range(none="minus the number of action dimensions"),
    }  # fmt: skip

    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    batch_size: int = 256
    hidden_dim: int = 128  # 256 scored the same on acrobot's rung a at 2.3× the time (TUNING.md, 2026-12-04)
    buffer_size: int = 1_000_000
    init_alpha: float = 0.1
    target_entropy: float | None = None


class SACLearner(nn.Module):
    """SAC on a replay of transitions of many tasks, each row carrying its task's ``code``.

    :meth:`add` stores a batch of transitions (and merges their ``[s, code]`` into the policy's input
    normaliser); :meth:`update` takes one gradient step on a replay minibatch: twin critics
    (:class:`~modules.blocks.EnsembleMLP` of 2 members, one batched matmul a layer) regress
    ``r + γ (1 − terminated)(min Q'(s', a') − α log π(a' | s'))`` (``γ^n`` for an ``n``-step ``r``) from
    Polyak-averaged target critics, the actor minimises ``α log π(ã | s) − min Q(s, ã)`` with the critics'
    weights detached, and ``log α`` moves the policy's entropy toward ``target_entropy``. The three losses
    share one backward pass and one fused Adam (a parameter group each): the cost that decides SAC's budget
    on CPU.
    A time-limit cut is no termination: store ``terminated`` only where the episode truly ended.

    Weights are initialised from ``seed`` (:data:`~common.seeding.POLICY_INIT`), minibatches and the
    actions sampled in updates drawn from a generator of ``seed`` (:data:`~common.seeding.REPLAY`).

    Shapes: ``obs, next_obs [N, O]``, ``code [N, Z]``, ``action [N, A]`` in ``[-1, 1]``, ``reward, terminated,
    steps [N]``.

    Example:
        >>> sac = SACLearner(obs_dim=2, code_dim=1, act_dim=1, settings={"batch_size": 8, "hidden_dim": 16})
        >>> sac.add(torch.randn(32, 2), torch.ones(32, 1), torch.rand(32, 1) * 2 - 1, torch.randn(32),
        ...         torch.randn(32, 2), torch.zeros(32, dtype=torch.bool))
        >>> sorted(sac.update())
        ['actor_loss', 'alpha', 'critic_loss', 'entropy', 'q']
        >>> sac.policy.act(torch.zeros(4, 2), torch.ones(4, 1), deterministic=True).shape
        torch.Size([4, 1])
    """

    def __init__(self, obs_dim: int, code_dim: int, act_dim: int, settings: SACSettings | dict | None = None,
                 seed: int = 0):  # fmt: skip
        super().__init__()
        self.settings = s = SACSettings.of(settings)
        with torch.random.fork_rng(devices=[]):  # the weights depend on the seed alone, not on the global RNG
            torch.manual_seed(derive_seed(POLICY_INIT, seed))
            self.policy = TanhGaussianPolicy(obs_dim, code_dim, act_dim, s.hidden_dim)
            self.critic = EnsembleMLP(2, obs_dim + code_dim + act_dim, s.hidden_dim, 1)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(s.init_alpha)))
        self.target_entropy = -float(act_dim) if s.target_entropy is None else s.target_entropy
        self.optimizer = torch.optim.Adam([
            {"params": self.policy.parameters(), "lr": s.actor_lr},
            {"params": self.critic.parameters(), "lr": s.critic_lr},
            {"params": [self.log_alpha], "lr": s.actor_lr},
        ], fused=True)  # fmt: skip
        self.replay = ReplayBuffer(s.buffer_size)
        self.generator = torch.Generator().manual_seed(derive_seed(REPLAY, seed))
        self.updates = 0

    @torch.no_grad()
    def add(self, obs: torch.Tensor, code: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
            next_obs: torch.Tensor, terminated: torch.Tensor, steps: torch.Tensor | None = None,
            **extra: torch.Tensor) -> None:  # fmt: skip
        """Store ``N`` transitions; their ``[s, code]`` join the running input statistics. An ``n``-step
        transition gives the number of rewards ``steps [N]`` its ``reward`` sums
        (:func:`~modules.policies.n_step.n_step_return`; None: 1), so its target bootstraps ``γ^steps``.
        ``extra`` fields ``[N, ...]`` ride along in the replay, unused by the updates (a trainer's task index)."""
        self.policy.input_normalizer.update(torch.cat([obs, code], dim=-1))
        exponent = torch.ones_like(reward) if steps is None else steps.to(reward.dtype)
        discount = self.settings.gamma**exponent * (~terminated).to(reward.dtype)
        self.replay.add(obs=obs, code=code, action=action, reward=reward, next_obs=next_obs, discount=discount,
                        **extra)  # fmt: skip

    def q_values(self, critic: nn.Module, obs: torch.Tensor, code: torch.Tensor, action: torch.Tensor,
                 params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """Both critics' ``Q(s, code, a)`` ``[2, N]`` on the policy's standardised ``[s, code]`` (with ``params``
        in place of ``critic``'s own weights)."""
        x = torch.cat([self.policy.features(obs, code), action], dim=-1)
        out = critic(x) if params is None else functional_call(critic, params, (x,))
        return out.squeeze(-1)

    def update(self) -> dict[str, torch.Tensor]:
        """One gradient step of critics, actor and temperature on a replay minibatch, then the Polyak
        step; returns the step's statistics (scalar tensors)."""
        s, g = self.settings, self.generator
        b = self.replay.sample(s.batch_size, g)
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = self.policy.sample(b["next_obs"], b["code"], g)
            q_next = self.q_values(self.critic_target, b["next_obs"], b["code"], next_action).min(0).values
            target = b["reward"] + b["discount"] * (q_next - alpha * next_log_prob)
        q = self.q_values(self.critic, b["obs"], b["code"], b["action"])
        critic_loss = ((q - target) ** 2).mean(1).sum()
        action, log_prob = self.policy.sample(b["obs"], b["code"], g)
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}  # the actor's loss moves no critic
        q_pi = self.q_values(self.critic, b["obs"], b["code"], action, frozen).min(0).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        (critic_loss + actor_loss + alpha_loss).backward()
        self.optimizer.step()
        with torch.no_grad():
            for target_p, p in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                target_p.lerp_(p, s.tau)
        self.updates += 1
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
                "entropy": -log_prob.detach().mean(), "q": q.detach().mean()}  # fmt: skip
