"""`derive_seed`: independent, reproducible seeds for each (purpose, iteration, rank) of a run."""

from __future__ import annotations

import numpy as np

# purposes, so that e.g. collection and imagination of the same iteration get different streams; REPLAY: an
# off-policy learner's minibatch draws, POLICY_INIT: the initial weights of networks a learner builds itself
STREAM, MODEL_STEP, IMAGINATION, PPO_MINIBATCHES, COLLECT_LATENT, COLLECT_ENV, METATEST, TASK_SEARCH = range(8)
REPLAY, POLICY_INIT = range(8, 10)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (``numpy.random.SeedSequence``; unlike ``hash`` of a
    tuple with strings, it is the same in every process).

    Example:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
        True
    """
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))
