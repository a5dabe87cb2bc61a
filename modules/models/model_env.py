"""`ModelEnv`: the learned dynamics model stepped as a batched environment (DESIGN §3)."""

from __future__ import annotations

import torch

from common.sampling import sample_normal
from envs import TaskFamily
from envs.rollout import EnvStep
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.models.meta_dynamics_net import ContextEncoding


class ModelEnv:
    """``B`` imagined trajectories of a meta dynamics model as one :class:`envs.rollout.BatchedEnv`.

    The ``B = E · M`` trajectories come in ``E`` consecutive groups of ``M = rollouts_per_context``:
    group ``e`` reads context set ``e`` of ``encoding`` (its ``M`` trajectories are the ``M``
    target queries of that set, so the keys/values computed once per set serve every step with no
    copy), and trajectory ``b`` steps with the target latent around ``latent[b]``. With
    ``sample_next`` the target latent and the next state are sampled from the model's Gaussians
    (noise from ``generator``); otherwise both are their means (our tasks are deterministic). Every
    next state is projected back to a physical one (:meth:`TaskFamily.project`). Rewards and
    terminations are the family's exact batched functions of each trajectory's ``params``, minus
    ``uncertainty_penalty`` × the heads' disagreement (MOPO); a step whose disagreement exceeds
    ``uncertainty_cut`` (and that does not terminate) is *truncated*. ``info`` carries
    ``disagreement`` and ``penalty`` ``[B]``. No episode resets itself: a rollout's ``alive`` mask
    says what counts.

    Args:
        encoding: ``E`` encoded context sets; latent: ``[B, Z]`` the ``z_c`` of each trajectory;
        params: ``[B, P]`` physics parameters of each trajectory's task (for the reward).

    Example:
        >>> from envs import make_family
        >>> model = MetaDynamicsModel(env="acrobot", hidden_dim=16, latent_dim=4)
        >>> enc = model.infer_context(torch.zeros(2, 5, 7), torch.zeros(2, 5, 6))
        >>> fam = make_family("acrobot")
        >>> env = ModelEnv(model, fam, enc, enc.q_zc.mean.repeat_interleave(3, 0), torch.ones(6, 4), 3)
        >>> start = env.reset(torch.zeros(6, 6))
        >>> env.step(torch.zeros(6, 1)).reward.shape
        torch.Size([6])
    """

    def __init__(
        self,
        model: MetaDynamicsModel,
        family: TaskFamily,
        encoding: ContextEncoding,
        latent: torch.Tensor,
        params: torch.Tensor,
        rollouts_per_context: int = 1,
        sample_next: bool = False,
        generator: torch.Generator | None = None,
        uncertainty_penalty: float = 0.0,
        uncertainty_cut: float | None = None,
    ):
        b = latent.shape[0]
        if b % rollouts_per_context:
            raise ValueError(f"{b} trajectories do not split into groups of {rollouts_per_context=}")
        self.model, self.family, self.encoding, self.params = model, family, encoding, params
        self.groups, self.per_context = b // rollouts_per_context, rollouts_per_context
        self.z_c = latent.view(self.groups, rollouts_per_context, -1)
        self.sample_next, self.generator = sample_next, generator
        self.uncertainty_penalty, self.uncertainty_cut = uncertainty_penalty, uncertainty_cut
        self.state: torch.Tensor | None = None

    def reset(self, start_obs: torch.Tensor) -> torch.Tensor:
        """Start every trajectory at ``start_obs [B, O]`` (real states); returns them."""
        self.state = start_obs
        return start_obs

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> EnvStep:
        if self.state is None:
            raise RuntimeError("ModelEnv.step before reset(start_obs)")
        obs, b = self.state, self.state.shape[0]
        x = torch.cat([obs, action], dim=-1).view(self.groups, self.per_context, -1)
        next_dist, disagreement = self.model.predict_with_disagreement(
            x, self.encoding, self.z_c, self.sample_next, self.generator
        )
        next_obs = sample_normal(next_dist, self.generator) if self.sample_next else next_dist.mean
        next_obs = self.family.project(next_obs.view(b, -1))
        disagreement = disagreement.view(b)
        terminated = self.family.terminated(next_obs, self.params)
        penalty = self.uncertainty_penalty * disagreement
        reward = self.family.reward(obs, action, next_obs, self.params) - penalty
        if self.uncertainty_cut is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = (disagreement > self.uncertainty_cut) & ~terminated
        self.state = next_obs
        info = {"disagreement": disagreement, "penalty": penalty}
        return EnvStep(next_obs, next_obs, reward, terminated, truncated, info)
