"""`ModelEnv`: a learned dynamics model stepped as a batched environment (DESIGN §3).

One env for every learned model — GSSM/MLSM (:func:`meta_dynamics_next_state`), L2A's adapted MLP
(:func:`adaptive_dynamics_next_state`) and M-DPILCO's particle ensemble
(:func:`embedded_dynamics_next_state`): they differ only in the next-state function; the start, the
physical projection, the exact reward and termination, and GSSM's MOPO penalty and uncertainty cut
are written once, in :class:`ModelEnv`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from common.sampling import sample_normal
from envs import TaskFamily
from envs.rollout import EnvStep
from modules.models.adaptive_dynamics import AdaptiveDynamics, Params
from modules.models.embedded_dynamics import EmbeddedDynamics
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.models.meta_dynamics_net import ContextEncoding

NextState = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""``(obs [B, O], action [B, A]) → (next state [B, O] before the physical projection, the heads'
disagreement [B] or None where the model has no heads)``."""


class ModelEnv:
    """``B`` imagined trajectories of a learned model as one :class:`envs.rollout.BatchedEnv`.

    Each step asks ``next_state`` for every trajectory's next state, projects it back to a physical
    one (:meth:`TaskFamily.project`), and scores it with the family's exact batched termination and
    reward of each trajectory's ``params [B, P]``. Where ``next_state`` gives the heads'
    disagreement, the reward is lowered by ``uncertainty_penalty`` × it (MOPO), a step whose
    disagreement exceeds ``uncertainty_cut`` (and that does not terminate) is *truncated*, and
    ``info`` carries ``disagreement`` and ``penalty`` ``[B]``. Nothing is detached, so a
    differentiable ``next_state`` gives rewards differentiable in the actions and start states. No
    episode resets itself: a rollout's ``alive`` mask says what counts.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> drift = lambda obs, action: (obs + 0.1, None)  # a stand-in model without heads
        >>> env = ModelEnv(drift, fam, torch.ones(6, 4))
        >>> start = env.reset(torch.zeros(6, 6))
        >>> env.step(torch.zeros(6, 1)).reward.shape
        torch.Size([6])
    """

    def __init__(self, next_state: NextState, family: TaskFamily, params: torch.Tensor,
                 uncertainty_penalty: float = 0.0, uncertainty_cut: float | None = None):  # fmt: skip
        self.next_state, self.family, self.params = next_state, family, params
        self.uncertainty_penalty, self.uncertainty_cut = uncertainty_penalty, uncertainty_cut
        self.state: torch.Tensor | None = None

    def reset(self, start_obs: torch.Tensor) -> torch.Tensor:
        """Start every trajectory at ``start_obs [B, O]`` (real states); returns them."""
        self.state = start_obs
        return start_obs

    def step(self, action: torch.Tensor) -> EnvStep:
        if self.state is None:
            raise RuntimeError("ModelEnv.step before reset(start_obs)")
        obs = self.state
        next_obs, disagreement = self.next_state(obs, action)
        next_obs = self.family.project(next_obs)
        terminated = self.family.terminated(next_obs, self.params)
        reward = self.family.reward(obs, action, next_obs, self.params)
        truncated, info = torch.zeros_like(terminated), {}
        if disagreement is not None:
            penalty = self.uncertainty_penalty * disagreement
            reward = reward - penalty
            if self.uncertainty_cut is not None:
                truncated = (disagreement > self.uncertainty_cut) & ~terminated
            info = {"disagreement": disagreement, "penalty": penalty}
        elif self.uncertainty_penalty or self.uncertainty_cut is not None:
            raise ValueError("ModelEnv: an uncertainty penalty or cut needs a next-state function with heads")
        self.state = next_obs
        return EnvStep(next_obs, next_obs, reward, terminated, truncated, info)


def meta_dynamics_next_state(
    model: MetaDynamicsModel,
    encoding: ContextEncoding,
    latent: torch.Tensor,
    rollouts_per_context: int = 1,
    sample_next: bool = False,
    generator: torch.Generator | None = None,
) -> NextState:
    """GSSM/MLSM's next state (no gradient: the model is frozen in imagination) with its heads' disagreement.

    The ``B = E · M`` trajectories come in ``E`` consecutive groups of ``M = rollouts_per_context``:
    group ``e`` reads context set ``e`` of ``encoding`` (its ``M`` trajectories are the ``M`` target
    queries of that set, so the keys/values computed once per set serve every step with no copy), and
    trajectory ``b`` steps with the target latent around ``latent[b]`` (``[B, Z]``, the ``z_c`` of each
    trajectory). With ``sample_next`` the target latent and the next state are sampled from the
    model's Gaussians (noise from ``generator``); otherwise both are their means (our tasks are
    deterministic).

    Example:
        >>> from envs import make_family
        >>> model = MetaDynamicsModel(env="acrobot", hidden_dim=16, latent_dim=4)
        >>> enc = model.infer_context(torch.zeros(2, 5, 7), torch.zeros(2, 5, 6))
        >>> step = meta_dynamics_next_state(model, enc, enc.q_zc.mean.repeat_interleave(3, 0), 3)
        >>> env = ModelEnv(step, make_family("acrobot"), torch.ones(6, 4), uncertainty_penalty=0.5)
        >>> start = env.reset(torch.zeros(6, 6))
        >>> env.step(torch.zeros(6, 1)).info["penalty"].shape
        torch.Size([6])
    """
    b = latent.shape[0]
    if b % rollouts_per_context:
        raise ValueError(f"{b} trajectories do not split into groups of {rollouts_per_context=}")
    groups = b // rollouts_per_context
    z_c = latent.view(groups, rollouts_per_context, -1)

    @torch.no_grad()
    def next_state(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1).view(groups, rollouts_per_context, -1)
        next_dist, disagreement = model.predict_with_disagreement(x, encoding, z_c, sample_next, generator)
        next_obs = sample_normal(next_dist, generator) if sample_next else next_dist.mean
        return next_obs.view(b, -1), disagreement.view(b)

    return next_state


def adaptive_dynamics_next_state(model: AdaptiveDynamics, weights: Params, rows_per_env: int) -> NextState:
    """L2A's next state: rows ``n·R … n·R + R − 1`` (``R = rows_per_env``) step with environment ``n``'s
    adapted ``weights`` (:meth:`AdaptiveDynamics.adapt`).

    Example:
        >>> model = AdaptiveDynamics(6, 1, hidden_dim=8)
        >>> weights = model.adapt(torch.zeros(2, 3, 7), torch.zeros(2, 3, 6), torch.ones(2, 3, dtype=torch.bool))
        >>> adaptive_dynamics_next_state(model, weights, 4)(torch.zeros(8, 6), torch.zeros(8, 1))[0].shape
        torch.Size([8, 6])
    """

    def next_state(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = torch.cat([obs, action], -1).view(-1, rows_per_env, obs.shape[-1] + action.shape[-1])
        return obs + model.predict(weights, x).view_as(obs), None

    return next_state


def embedded_dynamics_next_state(model: EmbeddedDynamics, h: torch.Tensor) -> NextState:
    """M-DPILCO's next state of ``B = K · R`` particles, differentiably: rows ``k·R … k·R + R − 1`` step
    with member ``k``'s mean prediction (each particle keeps its member for the whole rollout; our tasks
    are deterministic) and their task embedding ``h [B, E]``.

    Example:
        >>> model = EmbeddedDynamics(6, 1, num_tasks=2, embedding_dim=2, members=2, hidden_dim=8)
        >>> embedded_dynamics_next_state(model, torch.zeros(4, 2))(torch.zeros(4, 6), torch.zeros(4, 1))[0].shape
        torch.Size([4, 6])
    """
    k = model.members
    if h.shape[0] % k:
        raise ValueError(f"{h.shape[0]} particles do not split over {k} ensemble members")
    h_each = h.view(k, -1, h.shape[-1])

    def next_state(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = torch.cat([obs, action], -1).view(k, -1, obs.shape[-1] + action.shape[-1])
        return obs + model.delta_each(x, h_each).reshape_as(obs), None

    return next_state


def exact_next_state(family: TaskFamily, params: torch.Tensor) -> NextState:
    """The family's own equations (:meth:`TaskFamily.simulate`) with physics ``params [B, P]``, in the
    dtype of the states: the perfect model the gap ladder's first rung optimises a policy in.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> step = exact_next_state(fam, fam.params_tensor(fam.test_tasks()[:2]))
        >>> step(torch.tensor([[1.0, 0, 1, 0, 0, 0]] * 2), torch.zeros(2, 1))[0].shape
        torch.Size([2, 6])
    """

    def next_state(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, None]:
        return family.simulate(obs, action, params).to(obs.dtype), None

    return next_state
