"""LightningDataModules that expose the ground truth diagnostics need (the Protocols of
:mod:`diffuse_feat.capabilities`, which every one of them declares by inheriting)."""

from .base import EpochSeededSampler, TensorDataModule
from .digits import DigitsDataModule
from .images import CIFAR10DataModule, FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from .mnist5k import MNIST5kDataModule
from .rhm import RHMDataModule, RHMGrammar
from .synthetic import GaussianMixtureDataModule, LowRankGaussianDataModule
from .two_patch import NoisyImagePatchDataModule, TwoPatchDataModule

#: every DataModule of the library, in the order of the README's capability table
BUILTIN_DATAMODULES = (DigitsDataModule, GaussianMixtureDataModule, LowRankGaussianDataModule, RHMDataModule,
                       TwoPatchDataModule, NoisyImagePatchDataModule, MNISTDataModule, MNIST5kDataModule,
                       FashionMNISTDataModule, CIFAR10DataModule, ImageFolderDataModule)

__all__ = [
    "BUILTIN_DATAMODULES",
    "TensorDataModule",
    "EpochSeededSampler",
    "DigitsDataModule",
    "GaussianMixtureDataModule",
    "LowRankGaussianDataModule",
    "MNISTDataModule",
    "MNIST5kDataModule",
    "FashionMNISTDataModule",
    "CIFAR10DataModule",
    "ImageFolderDataModule",
    "RHMDataModule",
    "RHMGrammar",
    "TwoPatchDataModule",
    "NoisyImagePatchDataModule",
]
