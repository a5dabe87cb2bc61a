"""The learning code, one room per role: ``blocks`` (MLP, ensemble, normaliser), ``models``
(learned dynamics), ``policies`` (policies and planners), ``methods`` (one per row of Table 2).

The LightningModules below are the names the configs give (``class_path: modules.<Name>``).
"""

from modules.methods.gssm_aps.aps import APSModule
from modules.methods.gssm_test_time.test_time_method import GSSMTestTimeMethod
from modules.methods.l2a.learner import L2A
from modules.methods.m_dpilco import MDPILCO
from modules.methods.model_free_ppo import ModelFreePPO
from modules.models.meta_dynamics_model import MetaDynamicsModel

__all__ = ["L2A", "MDPILCO", "APSModule", "GSSMTestTimeMethod", "MetaDynamicsModel", "ModelFreePPO"]
