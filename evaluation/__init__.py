"""The meta-test protocol of every method (DESIGN §6) and its reports; no Lightning callback here,
callbacks and learners call it."""

from evaluation.protocol import (
    Agent,
    LatentInference,
    TaskResult,
    collect_online_context,
    evaluation_returns,
    run_meta_test,
    select_tasks,
    summarise,
)
from evaluation.reports import log_final_hparams, publish_meta_test, split_means, write_reports
from evaluation.rollout_strip import rollout_strip

__all__ = [
    "Agent",
    "LatentInference",
    "TaskResult",
    "collect_online_context",
    "evaluation_returns",
    "log_final_hparams",
    "publish_meta_test",
    "rollout_strip",
    "run_meta_test",
    "select_tasks",
    "split_means",
    "summarise",
    "write_reports",
]
