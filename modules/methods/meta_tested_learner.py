"""`MetaTestedLearner`: when and how a learner that counts its own real transitions is meta-tested."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from datamodules.sharding import TaskIndexShard
from evaluation import TaskResult, log_final_hparams, publish_meta_test, write_test_compute


class MetaTestedLearner:
    """The meta-test side of DR-PPO, PE-PPO, L2A and M-DPILCO, mixed into their LightningModule.

    A learner has ``family``, ``test_tasks``, ``real_transitions``, ``_transitions_before`` (the count
    before this iteration's collection), ``_results`` and ``_latest_metatest`` and gives
    :meth:`meta_test_tasks`, :meth:`metatest_header` and, where it does extra work at test time,
    :meth:`test_compute`.

    - :meth:`meta_test_when_due` (every rank, at the end of an iteration): the meta-test of the rank's
      shard of the test tasks when ``eval_every_transitions`` is crossed and after the iteration that
      reaches ``real_transitions``, which also stops the run.
    - ``train.py test`` runs the same protocol, the test tasks sharded over ranks (``test_step``).
    - Rank 0 writes the reports, logs the ``metatest/...`` scalars and the test-time compute (and writes
      it to ``test_compute.json``), and at the end of ``fit`` the HParams.
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

    def meta_test_when_due(self) -> None:
        hp = self.hparams
        self.log("real/transitions", float(self.real_transitions), rank_zero_only=True)
        done = self.real_transitions >= hp.real_transitions
        every = hp.eval_every_transitions
        if done or (every > 0 and self.real_transitions // every > self._transitions_before // every):
            shard = torch.arange(len(self.test_tasks))[self.trainer.global_rank :: self.trainer.world_size]
            self._publish(self.meta_test_tasks(shard.tolist()))
        if done:
            self.trainer.should_stop = True

    def _publish(self, results: list[TaskResult]) -> None:
        scalars = publish_meta_test(self.trainer, results, self.test_tasks, self.METHOD, self.metatest_header(),
                                    self.real_transitions)  # fmt: skip
        compute = self.test_compute()
        if compute:
            write_test_compute(self.trainer, self.METHOD, compute)
        for name, value in {**scalars, **compute}.items():
            self.log(name, value, rank_zero_only=True)
        self._latest_metatest = scalars

    def on_fit_end(self) -> None:
        """Rank 0: the run's settings in TensorBoard's *HParams* tab with the final meta-test per split."""
        log_final_hparams(self, self._latest_metatest, self.real_transitions)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TaskIndexShard(len(self.test_tasks), self.trainer.global_rank, self.trainer.world_size),
                          batch_size=None)  # fmt: skip

    def test_step(self, indices: torch.Tensor, batch_idx: int) -> None:
        self._results += self.meta_test_tasks(indices.tolist())

    def on_test_epoch_end(self) -> None:
        self._publish(self._results)
        self._results = []
