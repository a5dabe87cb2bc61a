"""The collection phase of a Dyna iteration: real episodes of the training tasks with the APS policy (DESIGN §4)."""

from __future__ import annotations

import torch

from common.sampling import sample_normal
from common.seeding import COLLECT_ENV, COLLECT_LATENT, derive_seed
from datamodules.collection import Transitions, collect_transitions
from datamodules.transition_datamodule import TransitionDataModule
from modules.methods.gssm_aps.aps import APSModule
from modules.models.meta_dynamics_model import MetaDynamicsModel


@torch.no_grad()
def collect_with_policy(
    model: MetaDynamicsModel,
    aps: APSModule,
    data: TransitionDataModule,
    tasks: torch.Tensor,
    steps_per_task: int,
    context_size: int,
    seed: int,
    iteration: int,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> tuple[Transitions, torch.Tensor]:
    """``steps_per_task`` real steps of each training task in ``tasks`` (sorted ``[K]``, the same on
    every rank) with the APS policy, appended to the buffers of ``data``. Call on every rank.

    Rank ``r`` steps the tasks of ``tasks`` in its :meth:`~TransitionDataModule.training_shard`; each
    task acts on one ``z_c`` from ``q(z_c | a random context of its buffer)`` of ``context_size``
    transitions — its mean or a sample, as the policy's ``latent`` setting imagines. The ranks' shares
    are all-gathered, so every rank appends the same transitions. Envs, contexts and action noise
    are seeded from ``(seed, iteration, rank)``: a resumed run collects the same.

    Returns:
        the transitions of ``tasks`` ``[K, S, ·]`` (identical on every rank) and this rank's
        finished-episode returns ``[E_r]`` (episodes cut by the step budget are not counted).

    Example:
        >>> data = TransitionDataModule("acrobot", num_train_tasks=2, random_steps_per_task=10, val_steps_per_task=0)
        >>> model = MetaDynamicsModel("acrobot", hidden_dim=8, latent_dim=2, num_heads=2)
        >>> model.fit_normalizers(*data.model_training_data())
        >>> aps = APSModule("acrobot", latent_dim=2, hidden_dim=8)
        >>> new, returns = collect_with_policy(model, aps, data, torch.tensor([1]), steps_per_task=5,
        ...                                    context_size=4, seed=0, iteration=1)
        >>> new.obs.shape, data.buffer.size.tolist()
        (torch.Size([1, 5, 6]), [10, 15])
    """
    device = model.device
    mine = tasks[torch.isin(tasks, data.training_shard(rank, world_size))]
    g = torch.Generator().manual_seed(derive_seed(COLLECT_LATENT, seed, iteration, rank))
    cx, cy = data.buffer.xy(mine, data.buffer.sample_index(mine, context_size, g))
    q_zc = model.infer_context(cx.to(device), cy.to(device)).q_zc
    latent = q_zc.mean if aps.hparams.latent == "mean" else sample_normal(q_zc, g)  # as APS imagines
    policy = aps.policy.to(device)
    noise = torch.Generator(device=device).manual_seed(derive_seed(COLLECT_LATENT, seed, iteration, rank, 1))
    share = collect_transitions(
        data.family,
        [data.train_tasks[i] for i in mine],
        steps_per_task,
        seed=derive_seed(COLLECT_ENV, seed, iteration, rank),
        act_fn=lambda obs: policy.act(obs.to(device), latent, generator=noise),
        progress=progress,
    )
    returns = torch.tensor([r for task in share.episode_returns for r in task])
    collected = data.gather_collected(share, world_size, device, tasks)
    data.add_transitions(tasks, collected)
    return collected, returns


def check_collection_schedule(per_iteration: int | None, num_tasks: int, world_size: int) -> None:
    """Refuse a number of tasks collected per iteration outside ``1..num_tasks``, or one that would
    give the ranks unequal shares of an iteration's tasks (None: all tasks, always fine).

    Example:
        >>> check_collection_schedule(8, num_tasks=16, world_size=4)  # 2 tasks per rank
        >>> check_collection_schedule(17, num_tasks=16, world_size=1)
        Traceback (most recent call last):
        ...
        ValueError: collect_tasks_per_iteration=17: expected 1..16 (the training tasks)
    """
    k = per_iteration
    if k is None:
        return
    if not 1 <= k <= num_tasks:
        raise ValueError(f"collect_tasks_per_iteration={k}: expected 1..{num_tasks} (the training tasks)")
    if k < num_tasks and world_size > 1 and (num_tasks % world_size or k % world_size):
        raise ValueError(f"collect_tasks_per_iteration={k} with {num_tasks} training tasks on {world_size} "
                         "ranks: both must be multiples of the number of ranks (equal shares)")  # fmt: skip
