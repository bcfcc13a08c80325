"""LightningModules around a shared backbone class. Extend them by subclassing (see each class's hooks)."""

from .base import BackboneModule
from .categorical import CategoricalDiffusionModule
from .checkpoint import load_denoiser
from .classification import ClassificationModule, load_classifier
from .diffusion import DiffusionModule

__all__ = ["BackboneModule", "DiffusionModule", "ClassificationModule", "CategoricalDiffusionModule", "load_denoiser",
           "load_classifier"]
