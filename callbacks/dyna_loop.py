"""`DynaLoop`: the scheduler of the Dyna phases — model, policy, real collection, meta-test (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl

from callbacks.dyna_reporting import add_dyna_layout, log_run_hparams, note_non_finite, publish_iteration
from callbacks.dyna_state import DynaProgress, check_trainer_for_dyna, refuse_non_finite_weights
from callbacks.preemption import PreemptionSignal, last_checkpoint_path
from common.validation import EVERY_TASK, INTEGER_1, POSITIVE, SEED, check_settings
from datamodules.sharding import round_robin_tasks
from datamodules.transition_datamodule import TransitionDataModule
from evaluation import select_tasks
from modules.methods.gssm_aps.aps import APSModule
from modules.methods.gssm_aps.collection_phase import check_collection_schedule, collect_with_policy
from modules.methods.gssm_aps.metatest_phase import meta_test_policy
from modules.methods.gssm_aps.policy_phase import fit_policy_in_model
from modules.methods.settings import MetaTestSettings
from modules.models.meta_dynamics_model import MetaDynamicsModel

DEFAULT_METATEST = MetaTestSettings(every_transitions=9600)


class DynaLoop(pl.Callback):
    """Runs the Dyna loop around the main ``Trainer`` (which fits the meta dynamics model): each main epoch
    (``max_epochs`` of them, bounded) is a Dyna iteration: the model's epoch, then on every rank **policy** (APS
    in the frozen model), **collection** (real steps, all-gathered into every rank's buffers) and, every
    ``metatest.every_transitions`` real transitions and after the last, **meta-test** (tasks over ranks);
    :mod:`modules.methods.gssm_aps`.

    Its state (:class:`callbacks.dyna_state.DynaProgress`) is in every checkpoint and draws are seeded by run seed
    and iteration, so ``fit --ckpt_path`` resumes exactly. SIGTERM/SIGUSR1 stop it at the next safe point (around
    the policy phase, with ``last.ckpt``, or at an iteration's start), exiting with 128 + the signal.

    Args:
        policy: the :class:`APSModule` to train, without ``env``, ``latent_dim`` (the model's), ``context_size``
            (the data's ``context_max``, also collection's) and ``seed`` (the loop's); None: APS's defaults.
        policy_epochs, max_grad_norm: PPO iterations (imagination + updates) per Dyna iteration; their gradient clip.
        collect_steps_per_task: real steps per collected task and iteration.
        collect_tasks_per_iteration: training tasks collected per iteration, round robin; None: all. Under DDP
            with fewer than all, it and the number of tasks must both be multiples of the number of ranks.
        metatest: the meta-test's context size, episodes, tasks and schedule (:class:`modules.methods.settings.
            MetaTestSettings`; the default: every 9,600 real transitions, 3 iterations of 16 tasks × 200 steps).
        verbose: the inner fits' Lightning banners and the phases' progress bars (else one line an iteration).
    """

    RANGES: ClassVar[dict[str, Any]] = {"policy_epochs": INTEGER_1, "max_grad_norm": POSITIVE, "seed": SEED,
        "collect_steps_per_task": INTEGER_1, "collect_tasks_per_iteration": EVERY_TASK,
        "metatest": MetaTestSettings}  # fmt: skip

    def __init__(
        self,
        policy: Callable[[str, int, int], APSModule] | None = None,
        policy_epochs: int = 20,
        max_grad_norm: float = 0.5,
        collect_steps_per_task: int = 200,
        collect_tasks_per_iteration: int | None = None,
        metatest: MetaTestSettings = DEFAULT_METATEST,
        seed: int = 0,
        verbose: bool = False,
    ):
        check_settings(DynaLoop, locals())
        self.make_policy, self.aps, self.test_tasks, self.bars = policy or APSModule, None, [], False  # the rest: setup
        self.seed, self.verbose, self.policy_epochs, self.max_grad_norm = seed, verbose, policy_epochs, max_grad_norm
        self.collect_steps_per_task = collect_steps_per_task
        self.collect_tasks_per_iteration = collect_tasks_per_iteration
        self.metatest = MetaTestSettings.of(metatest, DEFAULT_METATEST)
        self.progress, self.preemption = DynaProgress(), PreemptionSignal(stop_at_epoch_end=False)  # stops: the phases

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        check_trainer_for_dyna(trainer)
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(data, TransitionDataModule):
            raise TypeError("DynaLoop needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if self.aps is None:
            hp = pl_module.hparams
            self.aps = self.make_policy(hp.env, hp.latent_dim, data.hparams.context_max, seed=self.seed)
        self.test_tasks = select_tasks(data.test_tasks, self.metatest.tasks, data.family.name)  # a bad name fails now
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
        before = p.real_transitions
        with p.phase("collect", clock="collect"):
            tasks = round_robin_tasks(p.iteration, self.collect_tasks_per_iteration, len(data.train_tasks))
            collected = collect_with_policy(gssm, self.aps, data, tasks, self.collect_steps_per_task,
                                            data.hparams.context_max, self.seed, p.iteration, rank, world, self.bars)
        p.record_collection(*collected)
        if self.metatest.due(before, p.real_transitions) or p.iteration >= trainer.max_epochs:
            with p.phase("meta-test", clock="eval"):
                p.record_metatest(self.meta_test(trainer, gssm))
        publish_iteration(trainer, gssm, p, p.end_iteration(), direct=direct_log)

    def meta_test(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> dict[str, float]:
        p, family = self.progress, trainer.datamodule.family
        return meta_test_policy(trainer, gssm, self.aps.policy, family, self.test_tasks, self.seed, p.iteration,
                                p.real_transitions, self.metatest.context, self.metatest.episodes, self.bars)

    def on_test_epoch_end(self, trainer: pl.Trainer, gssm: MetaDynamicsModel) -> None:
        gssm.log_dict(self.meta_test(trainer, gssm), rank_zero_only=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, gssm: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        refuse_non_finite_weights(checkpoint["state_dict"], self.aps.state_dict())

    def on_exception(self, trainer: pl.Trainer, gssm: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, FloatingPointError):
            note_non_finite(exception, self.progress, last_checkpoint_path(trainer))
