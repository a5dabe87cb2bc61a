"""The test-time methods on a GSSM+APS checkpoint: GSSM-MPC and GSSM without amortization."""
