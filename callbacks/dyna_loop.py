"""`DynaLoop`: the Dyna alternation of model, policy, real collection and meta-test (DESIGN §4)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from callbacks.meta_test import publish_meta_test, rollout_strip, run_meta_test, select_tasks
from datamodules.collection import Transitions, collect_transitions
from datamodules.context_target_stream import shard_tasks
from datamodules.seeding import COLLECT_ENV, COLLECT_LATENT, METATEST, derive_seed
from datamodules.transition_datamodule import TransitionDataModule
from modules.aps import APSModule, ImaginationSource
from modules.meta_dynamics_model import MetaDynamicsModel
from modules.sampling import sample_normal

# What this callback logs is global on purpose: gathered (identical on every rank), already
# reduced by the APS trainer, or rank 0's meta-test; Lightning's advice to sync it again is moot.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(policy|real|metatest|time|dyna)/")

EXPLOITATION_LAYOUT = {
    "dyna": {
        "imagined vs real reward per step (training tasks)": [
            "Multiline",
            ["policy/imagined_reward_per_step", "real/reward_per_step"],
        ],
        "meta-test reward per step": ["Multiline", ["metatest/interpolation/reward_per_step",
                                                    "metatest/extrapolation/reward_per_step"]],
        "model: held-out one-step MSE, disagreement": ["Multiline", ["model/holdout/mse", "policy/model_disagreement"]],
    }
}


class DynaLoop(pl.Callback):
    """Runs the Dyna loop around the main ``Trainer`` that fits the meta dynamics model.

    Each main epoch is one Dyna iteration ``i = 1, 2, ...``: the model trains on the buffers
    (Lightning's epoch, then validation), then at the epoch's end, on every rank:

    a. **policy**: a second ``Trainer`` with the main one's accelerator, devices and nodes fits
       :class:`APSModule` for ``policy_epochs`` PPO iterations on imagined rollouts of the current
       model (frozen, in eval mode);
    b. **collection**: every training task runs ``collect_steps_per_task`` real steps with the
       policy, ``z_c`` once per task from ``q(z_c | random context of its buffer)`` (its mean or a
       sample, as the policy's ``latent`` setting imagines); each rank collects its shard of tasks
       and the shards are all-gathered, so every
       rank holds identical buffers and every task is collected exactly once per iteration;
    c. **meta-test** every ``eval_every`` iterations and after the last one, the test tasks sharded
       across ranks and gathered on rank 0: :func:`callbacks.meta_test.run_meta_test`, ``metatest.json`` and
       ``metatest.md`` in the log directory, ``metatest/...`` scalars, the table as TensorBoard
       text and an image strip of one episode of the first extrapolation task (for MuJoCo families
       only with an offscreen OpenGL backend, ``MUJOCO_GL=egl`` or ``osmesa``).

    Iteration 0 is the datamodule's random-action data. ``train.py test --ckpt_path`` runs the
    meta-test of the checkpoint's policy (``on_test_epoch_end``). The callback's state (iteration,
    real-transition count, APS weights and optimizer, torch RNG states) is part of every Lightning
    checkpoint, so ``fit --ckpt_path`` continues the loop where it stopped; envs and samplers are
    seeded from the run seed and the iteration, so the resumed loop replays the same randomness.

    Args:
        policy: keyword arguments of :class:`APSModule` (``env`` and ``latent_dim`` come from the model).
        policy_epochs: PPO iterations (imagination + updates) per Dyna iteration.
        max_grad_norm: gradient clipping of the policy updates.
        context_size: transitions in the context that ``z_c`` is inferred from when collecting.
        metatest_context: online context transitions per test task; metatest_episodes: evaluation
            episodes per test task; metatest_tasks: names of the test tasks to meta-test (None: all).
    """

    def __init__(
        self,
        policy: dict[str, Any] | None = None,
        policy_epochs: int = 10,
        max_grad_norm: float = 0.5,
        collect_steps_per_task: int = 200,
        context_size: int = 50,
        eval_every: int = 5,
        metatest_context: int = 50,
        metatest_episodes: int = 50,
        metatest_tasks: list[str] | None = None,
        seed: int = 0,
    ):
        self.policy_kwargs = dict(policy or {})
        self.policy_epochs, self.max_grad_norm = policy_epochs, max_grad_norm
        self.collect_steps_per_task, self.context_size = collect_steps_per_task, context_size
        self.eval_every, self.metatest_context, self.metatest_episodes = (
            eval_every,
            metatest_context,
            metatest_episodes,
        )
        self.metatest_tasks = metatest_tasks
        self.seed = seed
        self.iteration = 0
        self.real_transitions = 0
        self.aps: APSModule | None = None
        self._epoch_start = 0.0
        self._rng_to_restore: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    # ---- construction and checkpoint state ----------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(trainer.datamodule, TransitionDataModule):
            raise TypeError("DynaLoop needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if self.aps is None:
            kwargs = {"seed": self.seed, **self.policy_kwargs}
            self.aps = APSModule(env=pl_module.hparams.env, latent_dim=pl_module.hparams.latent_dim, **kwargs)
        self.metatest_task_list(trainer.datamodule)  # unknown task names fail now, not after an iteration

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "real_transitions": self.real_transitions,
            "aps": self.aps.state_dict(),
            "aps_optimizer": self.aps.optimizer_state_dict(),
            "aps_iterations": self.aps.iterations,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.real_transitions = state["real_transitions"]
        self.aps.load_state_dict(state["aps"])
        self.aps.load_optimizer_state_dict(state["aps_optimizer"])
        self.aps.iterations = state["aps_iterations"]
        self._rng_to_restore = (state["torch_rng"], state["cuda_rng"])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rank 0: a TensorBoard *Custom Scalars* layout that puts the model-exploitation gap —
        imagined vs real per-step reward of the training tasks — on one chart."""
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is not None and trainer.is_global_zero:
            tb.experiment.add_custom_scalars(EXPLOITATION_LAYOUT)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the sanity check, whose dataloader iterator draws from the global generator
        if self._rng_to_restore is not None:
            torch_rng, cuda_rng = self._rng_to_restore
            torch.set_rng_state(torch_rng)
            if cuda_rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(cuda_rng)
            self._rng_to_restore = None

    # ---- the loop ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.real_transitions == 0:  # the datamodule's random-action data is iteration 0
            self.real_transitions = len(trainer.datamodule.buffer)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        dm: TransitionDataModule = trainer.datamodule
        self.iteration += 1
        t_model = time.perf_counter() - self._epoch_start
        rank, world = trainer.global_rank, trainer.world_size
        shard = shard_tasks(len(dm.train_tasks), rank, world, "training tasks")

        t0 = time.perf_counter()
        policy_metrics = self.train_policy(trainer, gssm, dm, shard)
        t1 = time.perf_counter()
        data, returns = self.collect(trainer, gssm, dm, shard)
        dm.add_transitions(torch.arange(len(dm.train_tasks)), data)
        self.real_transitions += data.reward.numel()
        t2 = time.perf_counter()

        for name, value in policy_metrics.items():
            gssm.log(name, value)  # already averaged over ranks by the APS trainer
        if len(returns):  # episodes finished by this rank (those cut by the step budget are not)
            gssm.log("real/return", returns.mean(), rank_zero_only=True)
        gssm.log("real/reward_per_step", data.reward.mean())  # gathered: identical on all ranks
        gssm.log("real/transitions", float(self.real_transitions))
        gssm.log("dyna/iteration", float(self.iteration))
        for name, seconds in (("model", t_model), ("policy", t1 - t0), ("collect", t2 - t1)):
            gssm.log(f"time/{name}", seconds, sync_dist=True, reduce_fx="max")

        last = trainer.current_epoch + 1 >= trainer.max_epochs
        if self.iteration % self.eval_every == 0 or last:
            t3 = time.perf_counter()
            self.meta_test(trainer, gssm, dm)
            gssm.log("time/eval", time.perf_counter() - t3, rank_zero_only=True)

    def train_policy(
        self, trainer: pl.Trainer, gssm: MetaDynamicsModel, dm: TransitionDataModule, shard: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Fit APS on imagined rollouts of the current model; returns the last epoch's metrics."""
        params = dm.family.params_tensor(dm.train_tasks)
        self.aps.source = ImaginationSource(gssm, dm.buffer, shard, params)
        inner = pl.Trainer(
            accelerator=trainer.accelerator,
            devices=trainer.num_devices,
            num_nodes=trainer.num_nodes,
            strategy="ddp" if trainer.world_size > 1 else "auto",
            max_epochs=self.policy_epochs,
            gradient_clip_val=self.max_grad_norm,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=trainer.progress_bar_callback is not None,
            num_sanity_val_steps=0,
        )
        was_training = gssm.training
        gssm.eval()
        try:
            inner.fit(self.aps)
        finally:
            gssm.train(was_training)
        return {k: v for k, v in inner.callback_metrics.items() if k.startswith("policy/")}

    @torch.no_grad()
    def collect(
        self, trainer: pl.Trainer, gssm: MetaDynamicsModel, dm: TransitionDataModule, shard: torch.Tensor
    ) -> tuple[Transitions, torch.Tensor]:
        """Real steps of this rank's tasks with the policy, gathered from all ranks.

        Returns every task's transitions (``[num_tasks, S, ·]``, identical on all ranks) and this
        rank's finished-episode returns.
        """
        device = gssm.device
        g = torch.Generator().manual_seed(derive_seed(COLLECT_LATENT, self.seed, self.iteration, trainer.global_rank))
        cx, cy = dm.buffer.xy(shard, dm.buffer.sample_index(shard, self.context_size, g))
        q_zc = gssm.infer_context(cx.to(device), cy.to(device)).q_zc
        latent = q_zc.mean if self.aps.hparams.latent == "mean" else sample_normal(q_zc, g)  # as APS imagines
        policy = self.aps.policy.to(device)
        noise = torch.Generator(device=device).manual_seed(
            derive_seed(COLLECT_LATENT, self.seed, self.iteration, trainer.global_rank, 1)
        )
        seed = derive_seed(COLLECT_ENV, self.seed, self.iteration, trainer.global_rank)
        data = collect_transitions(
            dm.family,
            [dm.train_tasks[i] for i in shard],
            self.collect_steps_per_task,
            seed=seed,
            act_fn=lambda obs: policy.act(obs.to(device), latent, generator=noise),
            progress=trainer.is_global_zero and trainer.progress_bar_callback is not None,
        )
        returns = torch.tensor([r for task in data.episode_returns for r in task])
        return gather_shards(data, len(dm.train_tasks), trainer.world_size, device=device), returns

    # ---- meta-test --------------------------------------------------------------------------
    def meta_test(self, trainer: pl.Trainer, gssm: MetaDynamicsModel, dm: TransitionDataModule) -> None:
        """Every rank meta-tests its shard of the test tasks (``r, r + W, ...``); rank 0 gathers the
        results, writes the reports and logs scalars, the table and an image strip."""
        tasks = self.metatest_task_list(dm)
        rank, world = trainer.global_rank, trainer.world_size
        mine = tasks[rank::world]
        policy = self.aps.policy.to(gssm.device)
        results, latent = [], None
        if mine:
            was_training = gssm.training
            gssm.eval()
            try:
                results, latent = run_meta_test(
                    dm.family, mine, "gssm_aps", policy, self.metatest_episodes,
                    seed=derive_seed(METATEST, self.seed, self.iteration, rank),
                    infer_latent=lambda cx, cy, mask: gssm.infer_context(cx, cy, mask).q_zc,
                    n_context=self.metatest_context,
                    progress=trainer.is_global_zero and trainer.progress_bar_callback is not None,
                )  # fmt: skip
            finally:
                gssm.train(was_training)
        header = (
            f"{dm.family.name}, Dyna iteration {self.iteration}, {self.real_transitions} real training "
            f"transitions, {self.metatest_context} context steps, {self.metatest_episodes} episodes per task"
        )
        publish_meta_test(trainer, gssm, results, tasks, "gssm_aps", header, self.real_transitions)
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is not None and trainer.is_global_zero and mine and dm.family.renders_offscreen:
            # MuJoCo families: only with MUJOCO_GL=egl or osmesa
            index = next((i for i, t in enumerate(mine) if t.split == "extrapolation"), 0)
            strip = rollout_strip(dm.family, mine[index], policy, latent[index])
            name = f"metatest/rollout/{mine[index].name}"
            tb.experiment.add_image(name, strip, trainer.global_step, dataformats="HWC")

    def metatest_task_list(self, dm: TransitionDataModule) -> list:
        """The family's test tasks, or those named in ``metatest_tasks``."""
        return select_tasks(dm.test_tasks, self.metatest_tasks, dm.family.name)

    def on_test_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        self.meta_test(trainer, gssm, trainer.datamodule)


def all_gather_stacked(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` stacked ``[W, ...]`` (plain ``torch.distributed.all_gather``)."""
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor)
    return torch.stack(parts)


def gather_shards(
    data: Transitions,
    num_tasks: int,
    world: int,
    all_gather: Callable[[torch.Tensor], torch.Tensor] = all_gather_stacked,
    device: torch.device | str = "cpu",
) -> Transitions:
    """All ranks' transitions in task order ``[num_tasks, S, ·]`` (shard ``r`` holds tasks ``r::W``)."""
    if world == 1:
        return data
    width = -(-num_tasks // world)  # ceil: shards are padded to equal size for all_gather
    fields = []
    for tensor in (data.obs, data.action, data.reward, data.next_obs, data.done.float()):
        padded = tensor.new_zeros(width, *tensor.shape[1:])
        padded[: len(tensor)] = tensor
        gathered = all_gather(padded.to(device)).cpu()  # [W, width, ...]
        out = tensor.new_zeros(num_tasks, *tensor.shape[1:])
        for rank in range(world):
            ids = shard_tasks(num_tasks, rank, world)
            out[ids] = gathered[rank, : len(ids)].to(out.dtype)
        fields.append(out)
    obs, action, reward, next_obs, done = fields
    return Transitions(obs, action, reward, next_obs, done.bool())
