"""LightningDataModules of mbmrl: per-task buffers and context/target streams."""

from datamodules.collection import Transitions, collect_transitions
from datamodules.context_target_stream import ContextTargetStream
from datamodules.sharding import gather_shards, shard_tasks
from datamodules.task_buffers import MultiTaskBuffer
from datamodules.transition_datamodule import TransitionDataModule

__all__ = [
    "ContextTargetStream",
    "MultiTaskBuffer",
    "TransitionDataModule",
    "Transitions",
    "collect_transitions",
    "gather_shards",
    "shard_tasks",
]
