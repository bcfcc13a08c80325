"""LightningDataModules that expose the ground truth diagnostics need (:mod:`diffuse_feat.capabilities` lists it)."""

from ..capabilities import (
    CAPABILITIES,
    GaussianReference,
    LatentTrees,
    MixtureTheory,
    OracleLabels,
    PlantedFeatures,
    PopulationScore,
    TrainingSet,
    capabilities_of,
    capability_tables,
    check_capabilities,
)
from ..errors import MissingGroundTruth
from .base import EpochSeededSampler, TensorDataModule
from .digits import DigitsDataModule
from .images import CIFAR10DataModule, FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from .rhm import RHMDataModule, RHMGrammar
from .synthetic import GaussianMixtureDataModule, LowRankGaussianDataModule
from .two_patch import NoisyImagePatchDataModule, TwoPatchDataModule

#: every DataModule of the library, in the order of the README's capability table
BUILTIN_DATAMODULES = (DigitsDataModule, GaussianMixtureDataModule, LowRankGaussianDataModule, RHMDataModule,
                       TwoPatchDataModule, NoisyImagePatchDataModule, MNISTDataModule, FashionMNISTDataModule,
                       CIFAR10DataModule, ImageFolderDataModule)

__all__ = [
    "BUILTIN_DATAMODULES",
    "capability_tables",
    "TensorDataModule",
    "EpochSeededSampler",
    "MissingGroundTruth",
    "CAPABILITIES",
    "TrainingSet",
    "GaussianReference",
    "PopulationScore",
    "OracleLabels",
    "MixtureTheory",
    "LatentTrees",
    "PlantedFeatures",
    "capabilities_of",
    "check_capabilities",
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
