"""`ModelPredictiveAgent`: GSSM-MPC — MPPI planning in the meta dynamics model, no policy (DESIGN §8)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from common.clock import synchronized_clock
from envs import TaskFamily
from envs.rollout import StepPolicy, agent_policy
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.models.meta_dynamics_net import ContextEncoding
from modules.models.model_env import ModelEnv, meta_dynamics_next_state
from modules.policies.mppi import MPPI, open_loop_returns


class ModelPredictiveAgent(nn.Module):
    """An :class:`envs.rollout.Agent` that re-plans every step with :class:`modules.policies.mppi.MPPI` in the
    meta dynamics model, for ``T`` tasks at once.

    :meth:`infer_latent` is the meta-test's latent inference: it encodes each task's context (the
    online transitions so far) and keeps the encoding; :meth:`act` then plans in it. So the planner
    always acts in the context it was last given — during the online context phase the latent and
    the attention path are re-inferred before every step, as the protocol does for a policy.
    Candidate sequences are imagined with :class:`modules.models.model_env.ModelEnv` (the heads' mean
    next state, projected to a physical state) and scored by the family's exact reward of each
    task's ``params`` (undiscounted, nothing after an imagined termination). The rows of ``act``
    come task-major, ``N = T · M`` (``M`` episodes per task), as the protocol lays them out.
    ``seconds`` / ``actions`` is the planning time per action: the wall time of the batched planning calls
    over the number of env rows they planned for (not the latency of one call).

    Args:
        model: the meta dynamics model (frozen); params: ``[T, P]`` the tasks' physics parameters,
            for the reward only; planner: the MPPI settings; seed: the planner's noise when the
            caller gives no generator.

    Example:
        >>> from envs import make_family
        >>> from modules.policies.mppi import MPPISettings
        >>> fam = make_family("acrobot")
        >>> agent = ModelPredictiveAgent(MetaDynamicsModel(env="acrobot", hidden_dim=16, latent_dim=2), fam,
        ...                              torch.ones(3, 4), MPPI(1, MPPISettings(horizon=4, samples=8)))
        >>> latent = agent.infer_latent(torch.zeros(3, 5, 7), torch.zeros(3, 5, 6), torch.ones(3, 5, dtype=torch.bool))
        >>> agent.act(torch.zeros(6, 6), latent.mean.repeat_interleave(2, 0)).shape
        torch.Size([6, 1])
    """

    def __init__(self, model: MetaDynamicsModel, family: TaskFamily, params: torch.Tensor, planner: MPPI,
                 seed: int = 0):  # fmt: skip
        super().__init__()
        self.model, self.family, self.params, self.planner = model, family, params, planner
        self.noise = torch.Generator(device=params.device).manual_seed(seed)
        self.encoding: ContextEncoding | None = None
        self.seconds, self.actions = 0.0, 0  # planning time and actions planned: the compute per action

    @torch.no_grad()
    def infer_latent(self, context_x: torch.Tensor, context_y: torch.Tensor, mask: torch.Tensor) -> Normal:
        """``q(z_c | C)`` of each task's context ``[T, n, ·]``; the encoding is kept for :meth:`act`."""
        if context_x.shape[0] != self.params.shape[0]:
            raise ValueError(f"context of {context_x.shape[0]} tasks for an agent of {self.params.shape[0]} tasks")
        self.encoding = self.model.infer_context(context_x, context_y, mask)
        return self.encoding.q_zc

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, latent: torch.Tensor, deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """The first action ``[N, A]`` of each row's plan (``obs [N, O]``, ``latent [N, Z]``, ``N = T · M``).
        MPPI is its own exploration, so ``deterministic`` changes nothing."""
        if self.encoding is None:
            raise RuntimeError("ModelPredictiveAgent.act before infer_latent: the planner needs a task context")
        tasks = self.params.shape[0]
        if obs.shape[0] % tasks or latent.shape[0] != obs.shape[0]:
            raise ValueError(f"obs {tuple(obs.shape)} and latent {tuple(latent.shape)}: expected {tasks} tasks × "
                             "M rows each, task-major")  # fmt: skip
        rows_per_task = obs.shape[0] // tasks * self.planner.samples
        z_c = latent.repeat_interleave(self.planner.samples, dim=0)
        params = self.params.repeat_interleave(rows_per_task, dim=0)

        start = synchronized_clock()
        next_state = meta_dynamics_next_state(self.model, self.encoding, z_c, rows_per_task)
        returns = open_loop_returns(ModelEnv(next_state, self.family, params))
        action = self.planner.plan(obs, returns, self.noise if generator is None else generator)
        self.seconds += synchronized_clock() - start
        self.actions += obs.shape[0]
        return action

    def evaluation_policy(self, latent: torch.Tensor, episodes: int) -> StepPolicy:
        """The protocol's evaluation step policy for ``episodes`` episodes per task (``latent [T, Z]``), the
        online context phase's warm-start plan dropped (:data:`evaluation.protocol.TestTimeAdaptation`)."""
        self.planner.reset()
        return agent_policy(self, latent.repeat_interleave(episodes, dim=0), deterministic=True)

