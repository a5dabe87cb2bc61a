"""Policies and planners: the actor-critic, the shared PPO learner, SAC (its tanh-Gaussian actor, replay and
n-step returns), MPPI, PE-PPO's context encoder and M-DPILCO's embedded policy. They import ``modules.blocks``,
never ``models`` or ``methods``."""
