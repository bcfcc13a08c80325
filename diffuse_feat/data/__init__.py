"""LightningDataModules that expose the ground truth diagnostics need."""

from .base import EpochSeededSampler, MissingGroundTruth, TensorDataModule, provides, require
from .digits import DigitsDataModule
from .images import CIFAR10DataModule, FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from .rhm import RHMDataModule, RHMGrammar
from .synthetic import GaussianMixtureDataModule, LowRankGaussianDataModule
from .two_patch import NoisyImagePatchDataModule, TwoPatchDataModule

__all__ = [
    "TensorDataModule",
    "EpochSeededSampler",
    "MissingGroundTruth",
    "provides",
    "require",
    "DigitsDataModule",
    "GaussianMixtureDataModule",
    "LowRankGaussianDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "CIFAR10DataModule",
    "ImageFolderDataModule",
    "RHMDataModule",
    "RHMGrammar",
    "TwoPatchDataModule",
    "NoisyImagePatchDataModule",
]
