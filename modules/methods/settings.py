"""The method contract's settings blocks: the training budget, the collection schedule and the meta-test.

Each is one block in a config (``budget: {real_transitions: 48000}``, ``metatest: {episodes: 10}``);
a class takes it with its own default instance, so the fields a config leaves out keep that class's
defaults (:class:`common.settings.Settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.settings import Settings
from common.validation import EVERY_TASK, INTEGER_1, SEED, Range
from envs import NUM_TRAIN_TASKS, TASK_DESIGN, TASK_SEED


@dataclass(frozen=True)
class BudgetSettings(Settings):
    """The training tasks a learner meets and the real transitions it may spend in them.

    Attributes:
        num_train_tasks, task_seed, task_design: the training tasks, ``family.train_tasks(num_train_tasks,
            task_seed, task_design)``.
        real_transitions: the real-transition budget over all ranks; the run stops at the end of the
            iteration that spends it.

    Example:
        >>> BudgetSettings.of({"real_transitions": 800})
        BudgetSettings(num_train_tasks=16, task_seed=0, task_design='sobol', real_transitions=800)
    """

    RANGES: ClassVar[dict[str, Range]] = {"num_train_tasks": INTEGER_1, "task_seed": SEED,
                                          "real_transitions": INTEGER_1}  # fmt: skip

    num_train_tasks: int = NUM_TRAIN_TASKS
    task_seed: int = TASK_SEED
    task_design: str = TASK_DESIGN
    real_transitions: int = 48_000


@dataclass(frozen=True)
class CollectionSettings(Settings):
    """When a model-based learner collects: ``random_steps_per_task`` uniform-random steps in every
    training task at iteration 0, then one episode in each of ``tasks_per_iteration`` tasks per
    iteration, round robin (:func:`datamodules.sharding.round_robin_tasks`; None: every task)."""

    RANGES: ClassVar[dict[str, Range]] = {"random_steps_per_task": INTEGER_1, "tasks_per_iteration": EVERY_TASK}

    random_steps_per_task: int = 200
    tasks_per_iteration: int | None = None


@dataclass(frozen=True)
class MetaTestSettings(Settings):
    """DESIGN §6's meta-test: ``context`` online context transitions and ``episodes`` evaluation
    episodes per test task, on the test tasks named in ``tasks`` (None: all); a learner meta-tests
    each time its real transitions cross a multiple of ``every_transitions`` (0: only after the last
    iteration) and after the last iteration."""

    RANGES: ClassVar[dict[str, Range]] = {
        "context": INTEGER_1, "episodes": INTEGER_1,
        "every_transitions": Range(low=0, integer=True, special={0: "only after the last iteration"}),
    }  # fmt: skip

    context: int = 50
    episodes: int = 50
    tasks: list[str] | None = None
    every_transitions: int = 0

    def due(self, before: int, after: int) -> bool:
        """Whether real transitions going from ``before`` to ``after`` cross a multiple of ``every_transitions``.

        Example:
            >>> every = MetaTestSettings(every_transitions=9600)
            >>> every.due(6400, 9600), every.due(9600, 12800), MetaTestSettings().due(0, 48000)
            (True, False, False)
        """
        every = self.every_transitions
        return every > 0 and after // every > before // every

    def protocol(self) -> str:
        """The protocol as a report's header states it.

        Example:
            >>> MetaTestSettings(episodes=10).protocol()
            '50 context steps, 10 episodes per task'
        """
        return f"{self.context} context steps, {self.episodes} episodes per task"
