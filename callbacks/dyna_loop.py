"""`DynaLoop`: the scheduler of the Dyna phases — model, policy, real collection, meta-test (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl

from callbacks.dyna_reporting import add_dyna_layout, log_run_hparams, note_non_finite, publish_iteration
from callbacks.dyna_state import DynaProgress, refuse_non_finite_weights
from callbacks.preemption import PreemptionSignal, last_checkpoint_path
from common.validation import EVERY_TASK, INTEGER_1, POSITIVE, SEED, Range, check_settings, require_bounded_epochs
from datamodules.sharding import round_robin_tasks
from datamodules.transition_datamodule import TransitionDataModule
from evaluation import select_tasks
from modules.methods.gssm_aps.aps import APSModule
from modules.methods.gssm_aps.collection_phase import check_collection_schedule, collect_with_policy
from modules.methods.gssm_aps.metatest_phase import meta_test_policy
from modules.methods.gssm_aps.policy_phase import fit_policy_in_model
from modules.models.meta_dynamics_model import MetaDynamicsModel


class DynaLoop(pl.Callback):
    """Runs the Dyna loop around the main ``Trainer``, which fits the meta dynamics model. Each main epoch
    is one Dyna iteration ``i = 1, 2, ...``: the model's epoch (Lightning's), then, on every rank, the
    phases of :mod:`modules.methods.gssm_aps` — **policy** (APS on imagined rollouts of the frozen model),
    **collection** (real steps with the policy, all-gathered: every rank holds the same buffers) and,
    every ``eval_every`` iterations and after the last, **meta-test** (test tasks sharded over ranks,
    reports and rollout images from rank 0). Iteration 0 is the datamodule's random-action data.

    The loop's state (:class:`callbacks.dyna_state.DynaProgress`) is in every checkpoint and every draw is
    seeded from the run seed and the iteration, so ``fit --ckpt_path`` goes on where the run stopped with
    the same randomness. SIGTERM/SIGUSR1 stop it at the next safe point — before or after the policy phase
    (``last.ckpt`` written there) or at an iteration's start — exiting with 128 + the signal.

    Args:
        policy: the :class:`APSModule` to train, without ``env`` and ``latent_dim`` (the model's): in a config
            ``{class_path: modules.APSModule, init_args: {...}}``; None: APS's defaults. Its ``seed`` is the loop's.
        policy_epochs: PPO iterations (imagination + updates) per Dyna iteration.
        max_grad_norm: gradient clipping of the policy updates.
        collect_steps_per_task: real steps per collected task and iteration.
        collect_tasks_per_iteration: training tasks collected per iteration, round robin; None: all. Under DDP
            with fewer than all, it and the number of tasks must both be multiples of the number of ranks.
        context_size: transitions in the context ``z_c`` is inferred from when collecting.
        metatest_context: online context transitions per test task; metatest_episodes: evaluation
            episodes per test task; metatest_tasks: names of the test tasks to meta-test (None: all).
        verbose: the inner fits' Lightning banners and the phases' progress bars (else one line an iteration).

    The main trainer's ``max_epochs`` (the number of iterations) must be bounded: not -1 or None.
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "policy_epochs": INTEGER_1, "max_grad_norm": POSITIVE, "collect_steps_per_task": INTEGER_1,
        "collect_tasks_per_iteration": EVERY_TASK, "context_size": INTEGER_1, "eval_every": INTEGER_1,
        "metatest_context": INTEGER_1, "metatest_episodes": INTEGER_1, "seed": SEED,
    }  # fmt: skip

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
        check_settings(DynaLoop, locals())
        self.make_policy, self.aps, self.seed, self.verbose = policy or APSModule, None, seed, verbose
        self.policy_epochs, self.max_grad_norm, self.eval_every = policy_epochs, max_grad_norm, eval_every
        self.collect_steps_per_task, self.context_size = collect_steps_per_task, context_size
        self.collect_tasks_per_iteration = collect_tasks_per_iteration
        self.metatest_context, self.metatest_episodes = metatest_context, metatest_episodes
        self.metatest_tasks, self.test_tasks, self.bars = metatest_tasks, [], False  # the last two: set up
        self.progress, self.preemption = DynaProgress(), PreemptionSignal(stop_at_epoch_end=False)  # stops: the phases

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        require_bounded_epochs(trainer.max_epochs)
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(data, TransitionDataModule):
            raise TypeError("DynaLoop needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if self.aps is None:
            self.aps = self.make_policy(pl_module.hparams.env, pl_module.hparams.latent_dim, seed=self.seed)
        self.test_tasks = select_tasks(data.test_tasks, self.metatest_tasks, data.family.name)  # a bad name fails now
        self.bars = self.verbose and trainer.is_global_zero and trainer.progress_bar_callback is not None
        check_collection_schedule(self.collect_tasks_per_iteration, len(data.train_tasks), trainer.world_size)
        if any(isinstance(c, PreemptionSignal) for c in trainer.callbacks):
            raise ValueError("callbacks.PreemptionSignal is in trainer.callbacks, but DynaLoop handles SIGTERM/SIGUSR1 "
                             "itself (at its phase boundaries); remove it from the config")  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return self.progress.state_dict(self.aps)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress.load_state_dict(state, self.aps)

    def on_fit_start(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        """SIGTERM/SIGUSR1 taken over; a resume finishes the phases left undone (before the first batch is fetched)."""
        self.preemption.install()
        add_dyna_layout(trainer)
        self.progress.resume(trainer, lambda: self.finish_iteration(trainer, gssm, direct_log=True))

    def on_train_start(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        self.preemption.install()  # over the handlers Lightning installed after on_fit_start
        self.progress.restore_rng()  # after the sanity check, whose dataloader draws from the global generator
        self.progress.save_resumed_iteration(trainer)

    def on_fit_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        """A resumed iteration's ``last.ckpt`` when no epoch was left (no ``on_train_start``); the HParams tab."""
        self.progress.save_resumed_iteration(trainer)
        log_run_hparams(trainer, gssm, self)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.preemption.safe_point(trainer, save=False)  # iteration boundary: last.ckpt is current
        self.progress.start_model_phase(buffered=len(trainer.datamodule.buffer))

    def on_train_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        self.progress.end_model_phase()
        self.finish_iteration(trainer, gssm)

    def finish_iteration(self, trainer: pl.Trainer, gssm: MetaDynamicsModel, direct_log: bool = False) -> None:
        """The phases after the model's epoch, from the first one not completed."""
        p, data, rank, world = self.progress, trainer.datamodule, trainer.global_rank, trainer.world_size
        if p.completed == "model":
            self.preemption.safe_point(trainer)
            with p.phase("policy", clock="policy"):  # the signal handler rides along into the inner fit
                p.metrics.update(fit_policy_in_model(self.aps, gssm, data, data.training_shard(rank, world), trainer,
                                                     self.policy_epochs, self.max_grad_norm, [self.preemption],
                                                     self.verbose))  # fmt: skip
            p.completed = "policy"
            self.preemption.safe_point(trainer)
        with p.phase("collect", clock="collect"):
            tasks = round_robin_tasks(p.iteration, self.collect_tasks_per_iteration, len(data.train_tasks))
            collected = collect_with_policy(gssm, self.aps, data, tasks, self.collect_steps_per_task, self.context_size,
                                            self.seed, p.iteration, rank, world, self.bars)  # fmt: skip
        p.record_collection(*collected)
        if p.iteration % self.eval_every == 0 or p.iteration >= trainer.max_epochs:
            with p.phase("meta-test", clock="eval"):
                p.record_metatest(self.meta_test(trainer, gssm))
        publish_iteration(trainer, gssm, p, p.end_iteration(), direct=direct_log)

    def meta_test(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> dict[str, float]:
        p, family = self.progress, trainer.datamodule.family
        return meta_test_policy(trainer, gssm, self.aps.policy, family, self.test_tasks, self.seed, p.iteration,
                                p.real_transitions, self.metatest_context, self.metatest_episodes, self.bars)

    def on_test_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        gssm.log_dict(self.meta_test(trainer, gssm), rank_zero_only=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, gssm: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        refuse_non_finite_weights(checkpoint["state_dict"], self.aps.state_dict())

    def on_exception(self, trainer: pl.Trainer, gssm: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, FloatingPointError):
            note_non_finite(exception, self.progress, last_checkpoint_path(trainer))
