"""Lightning callbacks of mbmrl."""

from callbacks.task_latent_logger import TaskLatentLogger

__all__ = ["TaskLatentLogger"]
