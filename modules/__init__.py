"""LightningModules of mbmrl and their networks."""

from modules.meta_dynamics_model import MetaDynamicsModel
from modules.meta_dynamics_net import VARIANTS, ContextEncoding, MetaDynamicsNet

__all__ = ["VARIANTS", "ContextEncoding", "MetaDynamicsModel", "MetaDynamicsNet"]
