"""One place per method of the paper's Table 2, each owning its loop and checkpoint: GSSM+APS
(``gssm_aps``), GSSM-MPC and GSSM without amortization (``gssm_test_time``), L2A (``l2a``),
M-DPILCO, the model-free learners, and the bases they share. Methods import models and policies."""
