"""The meta-test phase of a Dyna iteration: the APS policy on the test tasks, sharded over ranks (DESIGN §6)."""

from __future__ import annotations

import pytorch_lightning as pl

from common.seeding import METATEST, derive_seed
from common.tensorboard_writing import epoch_log_step, tensorboard_logger
from envs import Task, TaskFamily
from evaluation import publish_meta_test, rollout_strip, run_meta_test
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.policies.actor_critic import ActorCritic


def meta_test_policy(
    trainer: pl.Trainer,
    model: MetaDynamicsModel,
    policy: ActorCritic,
    family: TaskFamily,
    tasks: list[Task],
    seed: int,
    iteration: int,
    real_transitions: int,
    context: int,
    episodes: int,
    progress: bool = False,
) -> dict[str, float]:
    """:func:`evaluation.run_meta_test` of ``policy`` on ``tasks``, the latent inferred by ``model``
    (in eval mode meanwhile) from ``context`` online transitions, ``episodes`` evaluation episodes a
    task. Call on every rank: rank ``r`` runs ``tasks[r::W]`` (seeded from ``(seed, iteration, r)``);
    rank 0 gathers the results and publishes them (:func:`evaluation.publish_meta_test`: ``metatest.json``
    and ``.md``, the history line at ``real_transitions``, the table in TensorBoard) with a labelled
    image of one episode of its first interpolation and extrapolation task (MuJoCo families only
    with an offscreen OpenGL backend, ``MUJOCO_GL=egl`` or ``osmesa``).

    Returns:
        the ``metatest/...`` scalars on rank 0, an empty dict on the other ranks.
    """
    method = f"{model.hparams.variant}_aps"  # gssm_aps, or mlsm_v0_aps / mlsm_v1_aps (Table 2's ablations)
    rank, world = trainer.global_rank, trainer.world_size
    mine = tasks[rank::world]
    policy = policy.to(model.device)
    results, latent = [], None
    if mine:
        was_training = model.training
        model.eval()
        try:
            results, latent = run_meta_test(
                family, mine, method, policy, episodes, seed=derive_seed(METATEST, seed, iteration, rank),
                infer_latent=lambda cx, cy, mask: model.infer_context(cx, cy, mask).q_zc, n_context=context,
                progress=progress,
            )  # fmt: skip
        finally:
            model.train(was_training)
    header = (f"{family.name}, Dyna iteration {iteration}, {real_transitions} real training transitions, "
              f"{context} context steps, {episodes} episodes per task")  # fmt: skip
    scalars = publish_meta_test(trainer, results, tasks, method, header, real_transitions)
    tb = tensorboard_logger(trainer)
    if tb is not None and trainer.is_global_zero and mine and family.renders_offscreen:
        for split in ("interpolation", "extrapolation"):
            index = next((i for i, t in enumerate(mine) if t.split == split), None)
            if index is not None:
                strip = rollout_strip(family, mine[index], policy, latent[index])
                tb.experiment.add_image(f"metatest/rollout/{split}", strip, epoch_log_step(trainer), dataformats="HWC")
    return scalars
