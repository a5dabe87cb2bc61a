"""`DynaLoop`: the Dyna alternation of model, policy, real collection and meta-test (DESIGN §4)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.preemption import PreemptionSignal, last_checkpoint_path, save_last
from common.rng_state import restore_rng_state, rng_state
from common.sampling import sample_normal
from common.seeding import COLLECT_ENV, COLLECT_LATENT, METATEST, derive_seed
from common.tensorboard_writing import epoch_log_step, tensorboard_logger
from datamodules.collection import Transitions, collect_transitions
from datamodules.transition_datamodule import TransitionDataModule
from evaluation import publish_meta_test, rollout_strip, run_meta_test, select_tasks
from modules.methods.gssm_aps.aps import APSModule, ImaginationSource
from modules.models.meta_dynamics_model import MetaDynamicsModel

# Scalars also written against real transitions (x axis) under ``by_real_transitions/``.
BY_REAL_TRANSITIONS = (
    "policy/imagined_reward_per_step",
    "real/reward_per_step",
    "metatest/interpolation/reward_per_step",
    "metatest/extrapolation/reward_per_step",
)
# TensorBoard's Custom Scalars tab: the charts to read first (regexes over scalar names).
DYNA_LAYOUT = {
    "Dyna loop (x: model step; by_real_transitions/: x = real transitions)": {
        "reward per step: imagined vs real, training tasks (the model-exploitation gap)": [
            "Multiline", [r"^policy/imagined_reward_per_step$", r"^real/reward_per_step$"],
        ],
        "meta-test reward per step by split, and a uniform-random policy": [
            "Multiline", [r"^metatest/(interpolation|extrapolation)/(random_)?reward_per_step$"],
        ],
        "the same against real transitions": ["Multiline", [r"^by_real_transitions/"]],
        "model: held-out one-step MSE, heads' disagreement in imagination": [
            "Multiline", [r"^model/holdout/mse$", r"^policy/model_disagreement$"],
        ],
        "seconds per iteration by phase": ["Multiline", [r"^time/(model|policy|collect|eval)_seconds$"]],
    }
}  # fmt: skip


class DynaLoop(pl.Callback):
    """Runs the Dyna loop around the main ``Trainer`` that fits the meta dynamics model.

    Each main epoch is one Dyna iteration ``i = 1, 2, ...``: the model trains on the buffers
    (Lightning's epoch, then validation), then at the epoch's end, on every rank:

    a. **policy**: a second ``Trainer`` with the main one's accelerator, devices and nodes fits
       :class:`APSModule` for ``policy_epochs`` PPO iterations on imagined rollouts of the current
       model (frozen, in eval mode);
    b. **collection**: every training task — or the next ``collect_tasks_per_iteration`` of them,
       round robin — runs ``collect_steps_per_task`` real steps with the policy, ``z_c`` once per
       task from ``q(z_c | random context of its buffer)`` (its mean or a sample, as the policy's
       ``latent`` setting imagines); each rank collects its shard's share of those tasks and the
       shares are all-gathered, so every rank holds identical buffers;
    c. **meta-test** every ``eval_every`` iterations and after the last one, the test tasks sharded
       across ranks and gathered on rank 0: :func:`evaluation.run_meta_test`, ``metatest.json`` and
       ``metatest.md`` in the log directory, ``metatest/...`` scalars, the table as TensorBoard
       text and a labelled image of one episode of an interpolation and of an extrapolation task
       (for MuJoCo families only with an offscreen OpenGL backend, ``MUJOCO_GL=egl`` or ``osmesa``).

    Iteration 0 is the datamodule's random-action data. ``train.py test --ckpt_path`` runs the
    meta-test of the checkpoint's policy (``on_test_epoch_end``). The callback's state (iteration,
    real-transition count, APS weights and optimizer, torch RNG states) is part of every Lightning
    checkpoint, so ``fit --ckpt_path`` continues the loop where it stopped; envs and samplers are
    seeded from the run seed and the iteration, so the resumed loop replays the same randomness.

    Faults: SIGTERM/SIGUSR1 (:class:`callbacks.preemption.PreemptionSignal`) stop the loop at the
    next safe point — before or after the policy phase (``last.ckpt`` written there, with the
    phases done, so a resume runs only the rest), or at the next iteration's start — exiting with
    128 + the signal. A non-finite loss gets a note naming iteration, phase and the last good
    checkpoint, and no checkpoint with non-finite weights is written.

    Args:
        policy: the :class:`APSModule` to train, without ``env`` and ``latent_dim`` (the model's) —
            in a config ``{class_path: modules.APSModule, init_args: {...}}``, so ``--print_config``
            shows every setting and an unknown one is refused; None: APS's defaults. Its ``seed``
            is the loop's.
        policy_epochs: PPO iterations (imagination + updates) per Dyna iteration.
        max_grad_norm: gradient clipping of the policy updates.
        collect_tasks_per_iteration: training tasks collected per iteration, taken round robin
            (iteration ``i`` starts at task ``(i − 1)·K mod T``), so every task gets as many
            episodes as the others over ``T / K`` iterations; None: all. A finer Dyna schedule: fewer
            real transitions between model and policy updates. Under DDP with fewer than all tasks,
            the number of tasks and this number must both be multiples of the number of ranks.
        context_size: transitions in the context that ``z_c`` is inferred from when collecting.
        metatest_context: online context transitions per test task; metatest_episodes: evaluation
            episodes per test task; metatest_tasks: names of the test tasks to meta-test (None: all).
        verbose: show the inner policy fits' Lightning banners and the progress bars of the policy,
            collection and meta-test phases; otherwise the terminal gets the model epoch's bar and
            one summary line per iteration.
    """

    def __init__(
        self,
        policy: Callable[[str, int], APSModule] | None = None,
        policy_epochs: int = 10,
        max_grad_norm: float = 0.5,
        collect_steps_per_task: int = 200,
        collect_tasks_per_iteration: int | None = None,
        context_size: int = 50,
        eval_every: int = 5,
        metatest_context: int = 50,
        metatest_episodes: int = 50,
        metatest_tasks: list[str] | None = None,
        seed: int = 0,
        verbose: bool = False,
    ):
        self.make_policy = policy or APSModule
        self.verbose = verbose
        self.policy_epochs, self.max_grad_norm = policy_epochs, max_grad_norm
        self.collect_steps_per_task, self.context_size = collect_steps_per_task, context_size
        self.collect_tasks_per_iteration = collect_tasks_per_iteration
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
        self.completed = "iteration"  # the last completed phase of the current iteration
        self.running = "model"  # the phase in progress, for error messages
        self.metrics: dict[str, float] = {}  # the current iteration's scalars, logged at its end
        self._latest_metatest: tuple[int, float | None, float | None] | None = None
        self.seconds_total = 0.0  # wall time of the Dyna iterations so far, resumes included
        self.preemption = PreemptionSignal(stop_at_epoch_end=False)  # safe points: the phases
        self._epoch_start = 0.0
        self._rng_to_restore: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self._save_pending = False  # a resumed iteration finished in on_fit_start, not yet in last.ckpt

    # ---- construction and checkpoint state ----------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(trainer.datamodule, TransitionDataModule):
            raise TypeError("DynaLoop needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if self.aps is None:
            self.aps = self.make_policy(pl_module.hparams.env, pl_module.hparams.latent_dim, seed=self.seed)
        self.metatest_task_list(trainer.datamodule)  # unknown task names fail now, not after an iteration
        self.check_collection_schedule(len(trainer.datamodule.train_tasks), trainer.world_size)
        if any(isinstance(c, PreemptionSignal) for c in trainer.callbacks):
            raise ValueError("callbacks.PreemptionSignal is in trainer.callbacks, but DynaLoop handles SIGTERM/SIGUSR1 "
                             "itself (at its phase boundaries); remove it from the config")  # fmt: skip

    def check_collection_schedule(self, num_tasks: int, world_size: int) -> None:
        """Refuse a ``collect_tasks_per_iteration`` outside ``1..num_tasks``, or one that would give
        the ranks unequal shares of an iteration's tasks."""
        k = self.collect_tasks_per_iteration
        if k is None:
            return
        if not 1 <= k <= num_tasks:
            raise ValueError(f"collect_tasks_per_iteration={k}: expected 1..{num_tasks} (the training tasks)")
        if k < num_tasks and world_size > 1 and (num_tasks % world_size or k % world_size):
            raise ValueError(f"collect_tasks_per_iteration={k} with {num_tasks} training tasks on {world_size} "
                             "ranks: both must be multiples of the number of ranks (equal shares)")  # fmt: skip

    def collection_tasks(self, num_tasks: int) -> torch.Tensor:
        """The training tasks collected at the current iteration, sorted ``[K]``."""
        k = self.collect_tasks_per_iteration
        if k is None or k >= num_tasks:
            return torch.arange(num_tasks)
        return ((self.iteration - 1) * k + torch.arange(k)).remainder(num_tasks).sort().values

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "real_transitions": self.real_transitions,
            "aps": self.aps.state_dict(),
            "aps_hparams": dict(self.aps.hparams),  # plain data: test-time methods rebuild the policy from it
            "aps_optimizer": self.aps.optimizer_state_dict(),
            "aps_iterations": self.aps.iterations,
            "completed": self.completed,
            "seconds_total": self.seconds_total,
            "metrics": dict(self.metrics),
            **dict(zip(("torch_rng", "cuda_rng"), rng_state(), strict=True)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.real_transitions = state["real_transitions"]
        self.aps.load_state_dict(state["aps"])
        self.aps.load_optimizer_state_dict(state["aps_optimizer"])
        self.aps.iterations = state["aps_iterations"]
        self.completed, self.metrics = state.get("completed", "iteration"), dict(state.get("metrics", {}))
        self.seconds_total = state.get("seconds_total", 0.0)
        self._rng_to_restore = (state["torch_rng"], state["cuda_rng"])

    def on_fit_start(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        """Every rank: take over SIGTERM/SIGUSR1 (:class:`callbacks.preemption.PreemptionSignal`).
        Rank 0: a TensorBoard *Custom Scalars* layout that puts the model-exploitation gap —
        imagined vs real per-step reward of the training tasks — on one chart. On a resume: drop
        ``metatest_history.jsonl`` lines from beyond the checkpoint (rank 0) and finish the phases a
        preemption left undone, from the checkpoint's RNG state (every rank). This must precede
        the fit loop, which on a resume fetches the first batch of the next epoch before
        ``on_train_start``."""
        self.preemption.install()
        tb = tensorboard_logger(trainer)
        if tb is not None and trainer.is_global_zero:
            tb.experiment.add_custom_scalars(DYNA_LAYOUT)
        if self._rng_to_restore is None:  # not a resume
            return
        if trainer.is_global_zero:
            trim_history(Path(trainer.log_dir or trainer.default_root_dir), self.real_transitions)
        if self.completed != "iteration":
            self.restore_rng()
            self.finish_iteration(trainer, gssm, direct_log=True)
            self._rng_to_restore = rng_state()
            # saved once Lightning has restored the optimizers (after this hook): in on_train_start,
            # or in on_fit_end when the fit loop had no epoch left and skipped on_train_start
            self._save_pending = True

    def on_fit_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        """Every rank: ``last.ckpt`` of an iteration a resume finished when no epoch was left (the fit
        loop then skips ``on_train_start``). Rank 0: the run's settings — model, data, Dyna loop,
        policy — in TensorBoard's *HParams* tab with the final meta-test per split (configs set
        ``default_hp_metric: false``, so no placeholder ``hp_metric``)."""
        if self._save_pending and self._rng_to_restore is not None:  # saved with the iteration's RNG state
            self.restore_rng()
        self.save_pending_iteration(trainer)
        tb = tensorboard_logger(trainer)
        if tb is None or not trainer.is_global_zero or self._latest_metatest is None:
            return
        dyna = {k: getattr(self, k) for k in ("policy_epochs", "max_grad_norm", "collect_steps_per_task",
                                               "collect_tasks_per_iteration", "context_size", "eval_every",
                                               "metatest_context", "metatest_episodes")}
        public = lambda hparams: {k: v for k, v in hparams.items() if not k.startswith("_")}  # noqa: E731
        params = {"model": public(gssm.hparams), "data": public(trainer.datamodule.hparams), "dyna": dyna,
                  "policy": public(self.aps.hparams)}  # fmt: skip
        _, interp, extrap = self._latest_metatest
        metrics = {"hparams/final_metatest_interpolation_reward_per_step": interp,
                   "hparams/final_metatest_extrapolation_reward_per_step": extrap,
                   "hparams/real_transitions": float(self.real_transitions)}  # fmt: skip
        tb.log_hyperparams(params, {k: v for k, v in metrics.items() if v is not None})

    def on_train_start(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        """Every rank, after the sanity check (its dataloader iterator draws from the global
        generator): the RNG state the uninterrupted run would have now; SIGTERM/SIGUSR1 taken back
        from the handlers Lightning installed after ``on_fit_start``."""
        self.preemption.install()
        if self._rng_to_restore is not None:
            self.restore_rng()
        self.save_pending_iteration(trainer)

    def save_pending_iteration(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` of an iteration a resume finished in ``on_fit_start`` (every rank)."""
        if self._save_pending:
            self._save_pending = False
            save_last(trainer)

    def restore_rng(self) -> None:
        restore_rng_state(*self._rng_to_restore)
        self._rng_to_restore = None

    # ---- the loop ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_if_preempted(trainer, save=False)  # iteration boundary: last.ckpt is current
        if self.real_transitions == 0:  # the datamodule's random-action data is iteration 0
            self.real_transitions = len(trainer.datamodule.buffer)
        self.running = "model"
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        self.iteration += 1
        self.completed = "model"
        self.metrics = {"time/model_seconds": time.perf_counter() - self._epoch_start}
        self.finish_iteration(trainer, gssm)

    def finish_iteration(self, trainer: pl.Trainer, gssm: MetaDynamicsModel, direct_log: bool = False) -> None:
        """The phases after the model's epoch — policy, collection, meta-test when due — from the
        first one not completed; a preemption signal is honoured before and after the policy phase."""
        dm: TransitionDataModule = trainer.datamodule
        shard = dm.training_shard(trainer.global_rank, trainer.world_size)
        if self.completed == "model":
            self.stop_if_preempted(trainer)
            self.running, t0 = "policy", time.perf_counter()
            self.metrics.update(self.train_policy(trainer, gssm, dm, shard))  # averaged over ranks by APS
            self.metrics["time/policy_seconds"] = time.perf_counter() - t0
            self.completed = "policy"
            self.stop_if_preempted(trainer)

        self.running, t0 = "collect", time.perf_counter()
        tasks = self.collection_tasks(len(dm.train_tasks))
        data, returns = self.collect(trainer, gssm, dm, tasks[torch.isin(tasks, shard)], tasks)
        dm.add_transitions(tasks, data)
        self.real_transitions += data.reward.numel()
        self.metrics["time/collect_seconds"] = time.perf_counter() - t0
        if len(returns):  # episodes finished by rank 0 (those cut by the step budget are not)
            self.metrics["real/episode_return"] = float(returns.mean())
        self.metrics["real/reward_per_step"] = float(data.reward.mean())  # gathered: identical on all ranks
        self.metrics["real/transitions"] = float(self.real_transitions)
        self.metrics["dyna/iteration"] = float(self.iteration)

        if self.iteration % self.eval_every == 0 or self.iteration >= trainer.max_epochs:
            self.running, t0 = "meta-test", time.perf_counter()
            scalars = self.meta_test(trainer, gssm, dm)  # rank 0's; empty elsewhere
            self.metrics.update(scalars, **{"time/eval_seconds": time.perf_counter() - t0})
            if scalars:
                self._latest_metatest = (self.iteration, scalars.get("metatest/interpolation/reward_per_step"),
                                         scalars.get("metatest/extrapolation/reward_per_step"))  # fmt: skip
        self.metrics["time/iteration_seconds"] = sum(v for k, v in self.metrics.items() if k.endswith("_seconds"))
        self.seconds_total += self.metrics["time/iteration_seconds"]
        self.metrics["time/total_seconds"] = self.seconds_total
        self.completed = "iteration"
        if trainer.is_global_zero:
            self.print_summary(trainer)
        if direct_log:  # a resumed iteration: outside an epoch, at the step its scalars belong to
            for logger in trainer.loggers:
                logger.log_metrics(self.metrics, step=epoch_log_step(trainer))
        else:
            for name, value in self.metrics.items():  # rank 0's view; the values are global or rank 0's
                gssm.log(name, value, rank_zero_only=True)
        tb = tensorboard_logger(trainer)
        if tb is not None and trainer.is_global_zero:
            for name in BY_REAL_TRANSITIONS:
                if name in self.metrics:
                    tb.experiment.add_scalar(f"by_real_transitions/{name.replace('/', '_')}", self.metrics[name],
                                             self.real_transitions)  # fmt: skip
        self.metrics = {}

    def print_summary(self, trainer: pl.Trainer) -> None:
        """Rank 0: one line with the iteration's headline numbers (the terminal's view of the run)."""
        m, seen = self.metrics, trainer.callback_metrics
        parts = [f"Dyna iteration {self.iteration}/{trainer.max_epochs}", f"{self.real_transitions:,} real transitions"]
        if "model/val/nll" in seen:
            parts.append(f"model val NLL {float(seen['model/val/nll']):.3f}")
        if "policy/imagined_reward_per_step" in m:
            parts.append(f"reward/step imagined {m['policy/imagined_reward_per_step']:.3f} "
                         f"real {m['real/reward_per_step']:.3f}")  # fmt: skip
        if self._latest_metatest is not None:
            at, interp, extrap = self._latest_metatest
            when = "" if at == self.iteration else f" (iteration {at})"
            show = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731  (a split with no task selected)
            parts.append(f"meta-test interp {show(interp)} extrap {show(extrap)}{when}")
        parts.append(f"{m['time/iteration_seconds']:.0f} s")
        line = " | ".join(parts)
        bar = trainer.progress_bar_callback
        bar.print(line) if bar is not None else print(line, flush=True)

    def stop_if_preempted(self, trainer: pl.Trainer, save: bool = True) -> None:
        """A safe point: after SIGTERM/SIGUSR1 on any rank, save ``last.ckpt`` (``save``) and exit
        with ``128 + signal`` (every rank; :class:`callbacks.preemption.Preempted`)."""
        signum = self.preemption.requested(trainer)
        if signum is None:
            return
        path = save_last(trainer) if save else last_checkpoint_path(trainer)
        self.preemption.stop(trainer, signum, path if os.path.exists(path) else "the start (no checkpoint yet)")

    def on_save_checkpoint(self, trainer: pl.Trainer, gssm: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights over a good checkpoint (raised before any file is written)."""
        weights = {**checkpoint["state_dict"], **{f"aps.{k}": v for k, v in self.aps.state_dict().items()}}
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"non-finite weights in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                                     "no checkpoint was written")  # fmt: skip

    def on_exception(self, trainer: pl.Trainer, gssm: pl.LightningModule, exception: BaseException) -> None:
        """Name the phase, the iteration and the checkpoint to resume from under a non-finite loss."""
        if isinstance(exception, FloatingPointError):
            iteration = self.iteration + (self.running == "model")  # counted at the model epoch's end
            path = last_checkpoint_path(trainer)
            kept = f"the last good checkpoint {path} is intact" if os.path.exists(path) else "no checkpoint yet"
            exception.add_note(
                f"Dyna iteration {iteration}, {self.running} phase: stopped on non-finite values; {kept} "
                "(resume with --ckpt_path after lowering the learning rate or checking the data)"
            )

    def train_policy(
        self, trainer: pl.Trainer, gssm: MetaDynamicsModel, dm: TransitionDataModule, shard: torch.Tensor
    ) -> dict[str, float]:
        """Fit APS on imagined rollouts of the current model; returns the last epoch's metrics."""
        source = ImaginationSource(gssm, dm.buffer, shard, dm.family.params_tensor(dm.train_tasks))
        # the signal handler rides along: it keeps SIGTERM/SIGUSR1 for the safe points after this phase
        return self.aps.fit_in_loop(source, trainer, self.policy_epochs, self.max_grad_norm, [self.preemption],
                                    verbose=self.verbose)  # fmt: skip

    @torch.no_grad()
    def collect(
        self,
        trainer: pl.Trainer,
        gssm: MetaDynamicsModel,
        dm: TransitionDataModule,
        shard: torch.Tensor,
        tasks: torch.Tensor,
    ) -> tuple[Transitions, torch.Tensor]:
        """Real steps with the policy in this rank's ``shard`` of the iteration's ``tasks``,
        gathered from all ranks.

        Returns the transitions of ``tasks`` (``[K, S, ·]``, identical on all ranks) and this
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
            progress=self.verbose and trainer.is_global_zero and trainer.progress_bar_callback is not None,
        )
        returns = torch.tensor([r for task in data.episode_returns for r in task])
        return dm.gather_collected(data, trainer.world_size, device, tasks), returns

    # ---- meta-test --------------------------------------------------------------------------
    def meta_test(self, trainer: pl.Trainer, gssm: MetaDynamicsModel, dm: TransitionDataModule) -> dict[str, float]:
        """Every rank meta-tests its shard of the test tasks (``r, r + W, ...``); rank 0 gathers the
        results, writes the reports, the table and an image strip, and returns the scalars (empty
        on other ranks)."""
        tasks = self.metatest_task_list(dm)
        method = f"{gssm.hparams.variant}_aps"  # gssm_aps, or mlsm_v0_aps / mlsm_v1_aps (Table 2's ablations)
        rank, world = trainer.global_rank, trainer.world_size
        mine = tasks[rank::world]
        policy = self.aps.policy.to(gssm.device)
        results, latent = [], None
        if mine:
            was_training = gssm.training
            gssm.eval()
            try:
                results, latent = run_meta_test(
                    dm.family, mine, method, policy, self.metatest_episodes,
                    seed=derive_seed(METATEST, self.seed, self.iteration, rank),
                    infer_latent=lambda cx, cy, mask: gssm.infer_context(cx, cy, mask).q_zc,
                    n_context=self.metatest_context,
                    progress=self.verbose and trainer.is_global_zero and trainer.progress_bar_callback is not None,
                )  # fmt: skip
            finally:
                gssm.train(was_training)
        header = (
            f"{dm.family.name}, Dyna iteration {self.iteration}, {self.real_transitions} real training "
            f"transitions, {self.metatest_context} context steps, {self.metatest_episodes} episodes per task"
        )
        scalars = publish_meta_test(trainer, results, tasks, method, header, self.real_transitions)
        tb = tensorboard_logger(trainer)
        if tb is not None and trainer.is_global_zero and mine and dm.family.renders_offscreen:
            # MuJoCo families: only with MUJOCO_GL=egl or osmesa. The first task of each split rank 0 ran.
            for split in ("interpolation", "extrapolation"):
                index = next((i for i, t in enumerate(mine) if t.split == split), None)
                if index is not None:
                    strip = rollout_strip(dm.family, mine[index], policy, latent[index])
                    step = epoch_log_step(trainer)
                    tb.experiment.add_image(f"metatest/rollout/{split}", strip, step, dataformats="HWC")
        return scalars

    def metatest_task_list(self, dm: TransitionDataModule) -> list:
        """The family's test tasks, or those named in ``metatest_tasks``."""
        return select_tasks(dm.test_tasks, self.metatest_tasks, dm.family.name)

    def on_test_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        for name, value in self.meta_test(trainer, gssm, trainer.datamodule).items():
            gssm.log(name, value, rank_zero_only=True)


def trim_history(log_dir: Path, real_transitions: int) -> None:
    """Drop ``metatest_history.jsonl`` lines an interrupted run wrote after the checkpoint that is
    being resumed (more real transitions than it holds), so the appended curve has no duplicates."""
    path = log_dir / "metatest_history.jsonl"
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(ln for ln in lines if json.loads(ln)["real_transitions"] <= real_transitions))
