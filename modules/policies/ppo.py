"""`PPOLearner`: clipped PPO with GAE on batches of rollouts — the one policy learner that APS
(imagined rollouts) and the model-free baselines (real episodes) share (DESIGN §3)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from common.epoch_means import EpochMeans
from common.finite_loss import require_finite_loss
from common.seeding import PPO_MINIBATCHES, derive_seed
from common.settings import Settings
from common.validation import DISCOUNT, INTEGER_1, POSITIVE, Range, weight
from modules.policies.actor_critic import ActorCritic


@dataclass
class Rollouts:
    """``B`` trajectories of ``H`` steps, time-major (imagined or real).

    Shapes: obs ``[H, B, O]``, action ``[H, B, A]`` (the unclipped policy sample),
    log_prob/reward/alive/terminated ``[H, B]``, value ``[H + 1, B]`` (the last one bootstraps),
    latent ``[B, Z]``. ``alive`` is 1 until the step on which the trajectory terminates
    (inclusive) and 0 after: rewards after termination are zeroed and those steps carry no loss.
    ``truncated`` marks the step after which a trajectory was cut without terminating (imagination
    cuts where the model is unsure): GAE bootstraps from the next value there but carries nothing
    back across it. Imagined rollouts also carry the model's ``disagreement [H, B]`` and ``penalty
    [H, B]`` (already subtracted from ``reward``); real ones leave them None.
    """

    obs: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    reward: torch.Tensor
    alive: torch.Tensor
    terminated: torch.Tensor
    value: torch.Tensor
    latent: torch.Tensor
    disagreement: torch.Tensor | None = None
    penalty: torch.Tensor | None = None
    truncated: torch.Tensor | None = None

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each trajectory ``[B]``."""
        return self.reward.sum(0)


def generalized_advantages(
    reward: torch.Tensor,
    value: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lam: float,
    truncated: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) over time-major ``reward [H, B]``, ``value [H + 1, B]``, ``terminated [H, B]``.

    The backward recursion runs over ``H`` with all ``B`` trajectories as one tensor; a
    terminated step does not bootstrap; a ``truncated [H, B]`` step bootstraps from ``value[t + 1]``
    but nothing after it flows back. Returns ``(advantages [H, B], value targets [H, B])``.

    Example:
        >>> adv, ret = generalized_advantages(torch.ones(3, 1), torch.zeros(4, 1),
        ...                                   torch.zeros(3, 1, dtype=torch.bool), gamma=1.0, lam=1.0)
        >>> ret[:, 0].tolist()
        [3.0, 2.0, 1.0]
    """
    advantages = torch.zeros_like(reward)
    running = torch.zeros_like(reward[0])
    nonterminal = (~terminated).float()
    carry = nonterminal if truncated is None else nonterminal * (~truncated).float()
    for t in reversed(range(reward.shape[0])):
        delta = reward[t] + gamma * value[t + 1] * nonterminal[t] - value[t]
        running = delta + gamma * lam * carry[t] * running
        advantages[t] = running
    return advantages, advantages + value[:-1]


@dataclass(frozen=True)
class PPOSettings(Settings):
    """Clipped PPO with GAE (CleanRL's names): the hyperparameters APS and the model-free learners
    share. A config gives them as one block, ``ppo: {ppo_epochs: 8, lr: 0.001, ...}``; fields left
    out keep the defaults of the class that takes the block (:class:`common.settings.Settings`).

    Attributes:
        ppo_epochs: passes over each iteration's rollouts; num_minibatches: minibatches per pass.
        clip_ratio: PPO's ratio clip ε; gamma, gae_lambda: discount and GAE λ.
        entropy_coef, value_coef: weights of the entropy bonus (0: none) and the value loss; lr: Adam's step size.
        gae_lambda 0 gives one-step TD advantages.
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "ppo_epochs": INTEGER_1, "num_minibatches": INTEGER_1, "clip_ratio": POSITIVE, "gamma": DISCOUNT,
        "gae_lambda": Range(low=0, high=1, special={0: "one-step TD advantages"}),
        "entropy_coef": weight("no entropy bonus"), "value_coef": POSITIVE, "lr": POSITIVE,
    }  # fmt: skip

    ppo_epochs: int = 4
    num_minibatches: int = 4
    clip_ratio: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    lr: float = 1e-3


class MinibatchIndexStream(IterableDataset):
    """Per pass: ``ppo_epochs`` shuffles of ``range(num_samples)`` cut into ``num_minibatches``
    index tensors. The count is the same on every rank whatever its number of samples."""

    def __init__(self, num_samples: int, ppo_epochs: int, num_minibatches: int, seed: int):
        self.num_samples, self.ppo_epochs, self.num_minibatches = num_samples, ppo_epochs, num_minibatches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.ppo_epochs * self.num_minibatches

    def __iter__(self):
        for _ in range(self.ppo_epochs):
            yield from torch.randperm(self.num_samples, generator=self.generator).tensor_split(self.num_minibatches)


class PPOLearner(pl.LightningModule):
    """Clipped PPO (CleanRL order) on the rollouts a subclass produces; each epoch is one iteration.

    ``on_train_epoch_start`` (every rank) calls :meth:`collect_rollouts` for this rank's batch,
    computes GAE(γ, λ), updates the critic's return normaliser (merged across ranks) and flattens
    the ``H × B`` steps; ``training_step`` then runs ``ppo_epochs × num_minibatches`` updates
    (paper eq. 11) on index minibatches, with the :class:`PPOSettings` given to ``__init__``.
    Subclasses save a ``seed`` hyperparameter and set ``self.policy``.

    The optimizer is created once and reused by every ``Trainer.fit`` (the Dyna loop fits APS again
    each iteration), so Adam's state carries over; :meth:`optimizer_state_dict` exposes it.
    """

    policy: ActorCritic
    NON_FINITE_STATES_ADVICE: ClassVar[str] = ""  # what to change when the rollouts' states are NaN/inf

    def __init__(self, ppo: PPOSettings) -> None:
        super().__init__()
        self.ppo = ppo
        self.iterations = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._batch: dict[str, torch.Tensor] = {}
        self._step_stats = EpochMeans()

    @abstractmethod
    def collect_rollouts(self) -> Rollouts:
        """This rank's rollouts with the current policy (called at every epoch start)."""

    @property
    @abstractmethod
    def samples_per_iteration(self) -> int:
        """``H × B`` of every :meth:`collect_rollouts` batch on this rank."""

    def log_rollouts(self, rollouts: Rollouts) -> None:
        """Log what a subclass reports of each batch of rollouts (nothing by default)."""

    def _sum_over_ranks(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce sum, so the policy's running normalisers stay identical on every rank."""
        if self._trainer is None or self.trainer.world_size == 1:
            return t
        return self.trainer.strategy.reduce(t, reduce_op="sum")

    def on_train_epoch_start(self) -> None:
        self.log_rollouts(self.prepare_iteration())

    def prepare_iteration(self) -> Rollouts:
        """Collect this rank's rollouts, compute GAE and the value targets, update the critic's return
        normaliser and keep the flattened batch for the iteration's minibatches; returns the rollouts.
        ``on_train_epoch_start`` runs it under a Trainer; a plain optimisation loop can call it too."""
        hp = self.ppo
        r = self.collect_rollouts()
        self._require_finite_states(r)
        adv, ret = generalized_advantages(r.reward, r.value, r.terminated, hp.gamma, hp.gae_lambda, r.truncated)
        self.policy.value_normalizer.update(ret[r.alive > 0].reshape(-1, 1), self._sum_over_ranks)
        h, b = r.reward.shape
        self._batch = {
            "obs": r.obs.reshape(h * b, -1),
            "latent": r.latent.expand(h, -1, -1).reshape(h * b, -1),
            "action": r.action.reshape(h * b, -1),
            "log_prob": r.log_prob.reshape(-1),
            "advantage": adv.reshape(-1),
            "return": ret.reshape(-1),
            "weight": r.alive.reshape(-1),
            "trajectory": torch.arange(b, device=r.reward.device).repeat(h),
        }
        self.iterations += 1
        return r

    def _require_finite_states(self, r: Rollouts) -> None:
        """Every rank stops with the same note when any rank's rollout states are NaN/inf (before the
        normaliser's all-reduce, where the others would wait for a rank that raised alone)."""
        finite = torch.cat([torch.isfinite(r.obs).flatten(1).all(1), torch.isfinite(r.value[-1:]).all(1)])  # [H + 1]
        first = (~finite).nonzero()
        largest = r.obs.abs().amax() if first.numel() == 0 else torch.tensor(float("nan"))
        step = torch.tensor(float(first[0, 0]) if first.numel() else -1.0)  # the last state shows in its value
        require_finite_loss(self, largest, "the largest rollout state", f"at policy iteration {self.iterations}",
                            {"first non-finite state": step}, self.NON_FINITE_STATES_ADVICE)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seed = derive_seed(PPO_MINIBATCHES, self.hparams.seed, self.iterations, rank)
        stream = MinibatchIndexStream(self.samples_per_iteration, self.ppo.ppo_epochs, self.ppo.num_minibatches, seed)
        return DataLoader(stream, batch_size=None)

    def minibatch_latent(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent each step of a minibatch acts on, and an extra loss term (here: the stored
        latents and 0; a learned context encoder recomputes them with gradients)."""
        return mb["latent"], mb["latent"].new_zeros(())

    def ppo_loss(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clipped PPO loss of a minibatch; steps after a termination have weight 0."""
        hp = self.ppo
        w = mb["weight"]
        wsum = w.sum().clamp_min(1.0)
        adv = mb["advantage"]
        mean = (adv * w).sum() / wsum
        std = (((adv - mean) ** 2 * w).sum() / wsum).sqrt()
        adv = (adv - mean) / (std + 1e-8)
        latent, extra = self.minibatch_latent(mb)
        dist, value = self.policy(mb["obs"], latent)
        log_prob = dist.log_prob(mb["action"]).sum(-1)
        ratio = (log_prob - mb["log_prob"]).exp()
        pg = -torch.min(ratio * adv, ratio.clamp(1 - hp.clip_ratio, 1 + hp.clip_ratio) * adv)
        v_loss = 0.5 * ((value - mb["return"]) / self.policy.value_normalizer.std) ** 2  # standardised units
        entropy = dist.entropy().sum(-1)
        wmean = lambda t: (t * w).sum() / wsum  # noqa: E731
        loss = wmean(pg) + hp.value_coef * wmean(v_loss) - hp.entropy_coef * wmean(entropy) + extra
        clipped = ((ratio - 1).abs() > hp.clip_ratio).float()
        return loss, {"entropy": wmean(entropy), "value_loss": wmean(v_loss), "clip_fraction": wmean(clipped)}

    def training_step(self, index: torch.Tensor, batch_idx: int) -> torch.Tensor:
        mb = {k: v.index_select(0, index.to(v.device)) for k, v in self._batch.items()}  # 3× faster than v[index]
        loss, info = self.ppo_loss(mb)
        require_finite_loss(self, loss, "PPO loss", f"at policy iteration {self.iterations}")
        self._step_stats.add({"loss": loss, **info})
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the iteration's mean PPO statistics once (``self.log`` per minibatch cost ~20% of an
        APS iteration on 2 CPU cores); averaged over ranks."""
        self._step_stats.log(self, "policy")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.parameters(), lr=self.ppo.lr, eps=1e-5, fused=True)
        return self._optimizer

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.configure_optimizers().state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.configure_optimizers().load_state_dict(state)
