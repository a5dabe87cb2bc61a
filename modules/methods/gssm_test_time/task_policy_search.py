"""`TaskPolicySearch`: GSSM without amortization — a policy optimised per test task in the model (DESIGN §8)."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch.func import functional_call, stack_module_state

from common.clock import synchronized_clock
from common.seeding import TASK_SEARCH, derive_seed
from common.validation import INTEGER_1, POSITIVE, SEED, Range, check_settings
from datamodules.task_buffers import MultiTaskBuffer
from envs.rollout import StepPolicy, Trajectory
from modules.methods.gssm_aps.aps import APSModule, ImaginationSource
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.policies.actor_critic import ActorCritic

INITS = ("amortized", "scratch")


class TaskPolicySearch:
    """The paper's Table 2 "GSSM" column: for each test task, PPO on imagined rollouts of that task
    alone, then its own policy acts in the evaluation episodes.

    A task's search is APS (:class:`modules.methods.gssm_aps.aps.APSModule`, the amortized run's settings) with the
    task's online context as its only data: context subsets and start states are drawn from those
    ``n`` real transitions (with replacement, as APS draws them), ``z_c`` is inferred from the
    subsets, rewards are the family's exact ones of the task's ``params``. It runs ``iterations`` PPO
    iterations of ``rollouts`` imagined rollouts, starting from the amortized policy
    (``init="amortized"``) or from a fresh one (``"scratch"``), with a fresh Adam. Each search is a
    plain optimisation loop, not a ``Trainer.fit``: test tasks
    are sharded over ranks and every rank's searches are independent (no gradient is averaged
    across ranks). Searches run one task after another; the evaluation episodes of all tasks then
    run as one batch, each task's rows through its own policy (the policies stacked, one call).
    ``seconds`` / ``searches`` is the extra compute per test task.

    Args:
        model: the meta dynamics model (frozen); amortized: the APS module of the same run.
        seed: the searches' randomness (with the task's index).

    Example:
        >>> model = MetaDynamicsModel(env="acrobot", hidden_dim=16, latent_dim=2)
        >>> aps = APSModule(env="acrobot", latent_dim=2, hidden_dim=8, horizon=3, rollouts_per_task=4,
        ...                 context_size=5, context_min=1, context_sets_per_task=2,
        ...                 ppo={"num_minibatches": 2, "ppo_epochs": 1})
        >>> search = TaskPolicySearch(model, aps, iterations=2, rollouts=4)
        >>> policy, returns = search.search(torch.zeros(5, 7), torch.zeros(5, 6), torch.ones(4), task_index=0)
        >>> len(returns)
        2
    """

    RANGES: ClassVar[dict[str, Range]] = {"iterations": INTEGER_1, "rollouts": INTEGER_1, "max_grad_norm": POSITIVE,
                                          "seed": SEED}  # fmt: skip

    def __init__(
        self,
        model: MetaDynamicsModel,
        amortized: APSModule,
        iterations: int = 10,
        rollouts: int = 256,
        init: str = "amortized",
        max_grad_norm: float = 0.5,
        seed: int = 0,
    ):
        if init not in INITS:
            raise ValueError(f"init={init!r}; expected one of {INITS}")
        check_settings(TaskPolicySearch, locals())
        sets = amortized.hparams.context_sets_per_task
        if rollouts % sets:
            raise ValueError(f"rollouts={rollouts} must be a multiple of the APS context_sets_per_task={sets}")
        self.model, self.amortized = model, amortized
        self.iterations, self.rollouts, self.init = iterations, rollouts, init
        self.max_grad_norm, self.seed = max_grad_norm, seed
        self.seconds, self.searches = 0.0, 0  # the extra compute per test task

    def search(
        self, context_x: torch.Tensor, context_y: torch.Tensor, params: torch.Tensor, task_index: int
    ) -> tuple[ActorCritic, list[float]]:
        """One task's policy from its context ``x [n, O + A]``, ``y [n, O]`` (raw units) and physics
        ``params [P]``; also the mean imagined return over the horizon at each iteration (before its
        update)."""
        start = synchronized_clock()
        with torch.inference_mode(False), torch.enable_grad():  # the meta-test runs under no_grad or inference mode
            policy, returns = self._search(context_x.clone(), context_y.clone(), params.clone(), task_index)
        self.seconds += synchronized_clock() - start
        self.searches += 1
        return policy, returns

    def _search(
        self, context_x: torch.Tensor, context_y: torch.Tensor, params: torch.Tensor, task_index: int
    ) -> tuple[ActorCritic, list[float]]:
        family = self.amortized.family
        obs_dim = family.obs_dim
        buffer = MultiTaskBuffer(1, context_x.shape[0], obs_dim, family.act_dim)
        obs, n = context_x[None, :, :obs_dim].cpu(), context_x.shape[0]
        buffer.add(torch.tensor([0]), obs, context_x[None, :, obs_dim:].cpu(), torch.zeros(1, n),
                   obs + context_y[None].cpu(), torch.zeros(1, n, dtype=torch.bool))  # fmt: skip
        hp = dict(self.amortized.hparams, dynamics_checkpoint=None, rollouts_per_task=self.rollouts,
                  seed=derive_seed(TASK_SEARCH, self.seed, task_index))  # fmt: skip
        learner = APSModule(**hp).to(self.model.device)
        if self.init == "amortized":
            learner.load_state_dict(self.amortized.state_dict())
        learner.source = ImaginationSource(self.model, buffer, torch.tensor([0]), params[None].cpu())
        optimizer = learner.configure_optimizers()  # a fresh Adam: the amortized run's state is not carried
        returns = []
        for _ in range(self.iterations):
            rollouts = learner.prepare_iteration()
            returns.append(float((rollouts.reward + rollouts.penalty).sum(0).mean()))
            for i, index in enumerate(learner.train_dataloader()):
                loss = learner.training_step(index, i)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(learner.policy.parameters(), self.max_grad_norm)
                optimizer.step()
        return learner.policy.eval(), returns

    def adapt(self, context_x: torch.Tensor, context_y: torch.Tensor, latent: torch.Tensor, episodes: int,
              params: torch.Tensor, task_indices: list[int]) -> StepPolicy:  # fmt: skip
        """The meta-test hook (:data:`evaluation.protocol.TestTimeAdaptation`, with the tasks'
        ``params [T, P]`` and their indices in the family's task list bound: each search's seed, the
        same however the tasks are sharded): search every task's policy from its context ``[T, n, ·]``,
        then the step policy of the ``T × episodes`` evaluation envs — env ``i·E + e`` acts with task
        ``i``'s policy and latent ``[T, Z]``, mean action."""
        policies = [self.search(context_x[i], context_y[i], params[i], task_indices[i])[0] for i in range(len(params))]
        return stacked_mean_action(policies, latent, episodes)


def stacked_mean_action(policies: list[ActorCritic], latent: torch.Tensor, episodes: int) -> StepPolicy:
    """A step policy for ``T · episodes`` envs, env ``i·E + e`` acting with ``policies[i]`` on
    ``latent[i]`` (mean action, clipped to ``[-1, 1]``); the ``T`` policies run as one vmapped call."""
    weights, buffers = stack_module_state(policies)
    template = copy.deepcopy(policies[0]).to("meta")

    def mean_action(w: dict, b: dict, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (w, b), (obs, z))[0].mean

    batched = torch.vmap(mean_action)
    tasks = len(policies)

    @torch.no_grad()
    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = obs.to(latent.device).view(tasks, episodes, -1)
        z = latent[:, None].expand(-1, episodes, -1)
        return batched(weights, buffers, o, z).reshape(tasks * episodes, -1).clamp(-1.0, 1.0).to(obs.device), {}

    return act
