"""`DynaLoop`: the scheduler of the Dyna phases — model, policy, real collection, meta-test (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl

from callbacks.dyna_reporting import add_dyna_layout, log_run_hparams, note_non_finite, publish_iteration
from callbacks.dyna_state import DynaProgress, check_trainer_for_dyna, refuse_non_finite_weights
from callbacks.preemption import PreemptionSignal, last_checkpoint_path
from common.validation import EVERY_TASK, INTEGER_1, POSITIVE, SEED, Range, check_settings
from datamodules.sharding import round_robin_tasks
from datamodules.transition_datamodule import TransitionDataModule
from evaluation import select_tasks
from modules.methods.gssm_aps.aps import APSModule
from modules.methods.gssm_aps.collection_phase import check_collection_schedule, collect_with_policy
from modules.methods.gssm_aps.metatest_phase import meta_test_policy
from modules.methods.gssm_aps.policy_phase import fit_policy_in_model
from modules.models.meta_dynamics_model import MetaDynamicsModel


class DynaLoop(pl.Callback):
    """Runs the Dyna loop around the main ``Trainer`` (which fits the meta dynamics model): each main epoch
    (``max_epochs`` of them, bounded) is a Dyna iteration: the model's epoch, then on every rank **policy** (APS
    in the frozen model), **collection** (real steps, all-gathered into every rank's buffers) and, every
    ``eval_every`` iterations and after the last, **meta-test** (tasks over ranks); :mod:`modules.methods.gssm_aps`.

    Its state (:class:`callbacks.dyna_state.DynaProgress`) is in every checkpoint and draws are seeded by run seed
    and iteration, so ``fit --ckpt_path`` resumes exactly. SIGTERM/SIGUSR1 stop it at the next safe point (around
    the policy phase, with ``last.ckpt``, or at an iteration's start), exiting with 128 + the signal.

    Args:
        policy: the :class:`APSModule` to train, without ``env``, ``latent_dim`` (the model's), ``context_size``
            (the data's ``context_max``, also collection's) and ``seed`` (the loop's); None: APS's defaults.
        policy_epochs: PPO iterations (imagination + updates) per Dyna iteration.
        max_grad_norm: gradient clipping of the policy updates.
        collect_steps_per_task: real steps per collected task and iteration.
        collect_tasks_per_iteration: training tasks collected per iteration, round robin; None: all. Under DDP
            with fewer than all, it and the number of tasks must both be multiples of the number of ranks.
        metatest_context: online context transitions per test task; metatest_episodes: evaluation
            episodes per test task; metatest_tasks: names of the test tasks to meta-test (None: all).
        verbose: the inner fits' Lightning banners and the phases' progress bars (else one line an iteration).
    """

    RANGES: ClassVar[dict[str, Range]] = {"policy_epochs": INTEGER_1, "max_grad_norm": POSITIVE, "seed": SEED,
        "collect_steps_per_task": INTEGER_1, "collect_tasks_per_iteration": EVERY_TASK, "eval_every": INTEGER_1,
        "metatest_context": INTEGER_1, "metatest_episodes": INTEGER_1}  # fmt: skip

    def __init__(
        self,
        policy: Callable[[str, int, int], APSModule] | None = None,
        policy_epochs: int = 20,
        max_grad_norm: float = 0.5,
        collect_steps_per_task: int = 200,
        collect_tasks_per_iteration: int | None = None,
        eval_every: int = 3,
        metatest_context: int = 50,
        metatest_episodes: int = 50,
        metatest_tasks: list[str] | None = None,
        seed: int = 0,
        verbose: bool = False,
    ):
        check_settings(DynaLoop, locals())
        self.make_policy, self.aps, self.seed, self.verbose = policy or APSModule, None, seed, verbose
        self.policy_epochs, self.max_grad_norm, self.eval_every = policy_epochs, max_grad_norm, eval_every
        self.collect_steps_per_task = collect_steps_per_task
        self.collect_tasks_per_iteration = collect_tasks_per_iteration
        self.metatest_context, self.metatest_episodes = metatest_context, metatest_episodes
        self.metatest_tasks, self.test_tasks, self.bars = metatest_tasks, [], False  # the last two: set up
        self.progress, self.preemption = DynaProgress(), PreemptionSignal(stop_at_epoch_end=False)  # stops: the phases

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        check_trainer_for_dyna(trainer)
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(data, TransitionDataModule):
            raise TypeError("DynaLoop needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if self.aps is None:
            hp = pl_module.hparams
            self.aps = self.make_policy(hp.env, hp.latent_dim, data.hparams.context_max, seed=self.seed)
        self.test_tasks = select_tasks(data.test_tasks, self.metatest_tasks, data.family.name)  # a bad name fails now
        self.bars = self.verbose and trainer.is_global_zero and trainer.progress_bar_callback is not None
        check_collection_schedule(self.collect_tasks_per_iteration, len(data.train_tasks), trainer.world_size)

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
            collected = collect_with_policy(gssm, self.aps, data, tasks, self.collect_steps_per_task,
                                            data.hparams.context_max, self.seed, p.iteration, rank, world, self.bars)
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
