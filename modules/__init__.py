"""LightningModules of mbmrl and their networks."""

from modules.actor_critic import ActorCritic
from modules.aps import APSModule
from modules.meta_dynamics_model import MetaDynamicsModel
from modules.meta_dynamics_net import VARIANTS, ContextEncoding, MetaDynamicsNet

__all__ = ["VARIANTS", "APSModule", "ActorCritic", "ContextEncoding", "MetaDynamicsModel", "MetaDynamicsNet"]
