"""Backbones: plain ``nn.Module``s shared by the diffusion and classification modules."""

from .base import BackboneFactory, SigmaEmbedding
from .conv_net import ConvNet
from .diffusers_unet import DiffusersUNet
from .mlp import MLP
from .patch_net import PatchNet
from .tree_unet import TreeUNet
from .unet import UNet

__all__ = ["BackboneFactory", "SigmaEmbedding", "MLP", "UNet", "ConvNet", "PatchNet", "TreeUNet", "DiffusersUNet"]
