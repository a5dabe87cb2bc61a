"""Lightning callbacks of mbmrl."""

from callbacks.dyna_loop import DynaLoop
from callbacks.preemption import PreemptionSignal
from callbacks.task_latent_logger import TaskLatentLogger

__all__ = ["DynaLoop", "PreemptionSignal", "TaskLatentLogger"]
