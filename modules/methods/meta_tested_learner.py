"""`MetaTested` and `MetaTestedLearner`: how a method's LightningModule is meta-tested, and when a
learner that counts its own real transitions is."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from datamodules.sharding import TaskIndexShard, rank_share
from evaluation import TaskResult, log_final_hparams, publish_meta_test


class MetaTested:
    """The meta-test loop of a LightningModule (mixed in): ``train.py test`` runs DESIGN §6's protocol
    on the rank's share of the test tasks (``test_step``) and publishes the results of all ranks
    (:func:`evaluation.publish_meta_test`: the reports, the ``metatest/...`` scalars and the
    test-time compute, logged by rank 0).

    A module has ``test_tasks``, ``real_transitions`` (what it was trained on), ``metatest``
    (:class:`modules.methods.settings.MetaTestSettings`), ``_results`` (a list) and
    ``_latest_metatest`` (a dict), and gives :meth:`meta_test_tasks`, :meth:`metatest_header` and,
    where it does extra work at test time, :meth:`test_compute`.
    """

    METHOD = ""  # the meta-test's name of the method

    def meta_test_tasks(self, indices: list[int]) -> list[TaskResult]:
        """The protocol on the test tasks at ``indices`` (this rank's share)."""
        raise NotImplementedError

    def metatest_header(self) -> str:
        """The first line of ``metatest.md``: what was meta-tested, after how much training."""
        raise NotImplementedError

    def test_compute(self) -> dict[str, float]:
        """The meta-test's extra compute since the last report, over all ranks (call on every rank)."""
        return {}

    def publish(self, results: list[TaskResult]) -> None:
        """Every rank: publish ``results`` (this rank's) with the compute; rank 0 logs the scalars."""
        compute = self.test_compute()
        scalars = publish_meta_test(self.trainer, results, self.test_tasks, self.METHOD, self.metatest_header(),
                                    self.real_transitions, compute)  # fmt: skip
        for name, value in scalars.items():
            self.log(name, value, rank_zero_only=True)
        self._latest_metatest = scalars

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TaskIndexShard(len(self.test_tasks), self.trainer.global_rank, self.trainer.world_size),
                          batch_size=None)  # fmt: skip

    def test_step(self, indices: torch.Tensor, batch_idx: int) -> None:
        self._results += self.meta_test_tasks(indices.tolist())

    def on_test_epoch_end(self) -> None:
        self.publish(self._results)
        self._results = []


class MetaTestedLearner(MetaTested):
    """The meta-test side of DR-PPO, PE-PPO, L2A and M-DPILCO, mixed into their LightningModule.

    Besides :class:`MetaTested`'s, a learner has ``budget``
    (:class:`modules.methods.settings.BudgetSettings`) and ``_transitions_before`` (the count before
    this iteration's collection).

    - :meth:`meta_test_when_due` (every rank, at the end of an iteration): the meta-test of the rank's
      share of the test tasks when ``metatest.every_transitions`` is crossed and after the iteration
      that reaches ``budget.real_transitions``, which also stops the run.
    - At the end of ``fit``, rank 0 writes the HParams (:func:`evaluation.log_final_hparams`).
    """

    def meta_test_when_due(self) -> None:
        self.log("real/transitions", float(self.real_transitions), rank_zero_only=True)
        done = self.real_transitions >= self.budget.real_transitions
        if done or self.metatest.due(self._transitions_before, self.real_transitions):
            mine = rank_share(torch.arange(len(self.test_tasks)), self.trainer.global_rank, self.trainer.world_size)
            self.publish(self.meta_test_tasks(mine.tolist()))
        if done:
            self.trainer.should_stop = True

    def on_fit_end(self) -> None:
        """Rank 0: the run's settings in TensorBoard's *HParams* tab with the final meta-test per split."""
        log_final_hparams(self.trainer, dict(self.hparams), self._latest_metatest, self.real_transitions)
