"""Backbones: plain ``nn.Module``s shared by the diffusion and classification modules."""

from .base import BackboneFactory, SigmaEmbedding
from .mlp import MLP
from .unet import UNet

__all__ = ["BackboneFactory", "SigmaEmbedding", "MLP", "UNet"]
