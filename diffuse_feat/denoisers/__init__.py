"""Denoisers ``D(x, sigma) -> E[x_0 | x]``: the protocol, the learned (preconditioned) ones, the exact references, and
adapters for networks trained elsewhere (eps-, v-, x0-prediction, EDM's F, flow velocity)."""

from .adapters import (
    EDMDenoiser,
    EpsilonPredictionDenoiser,
    FlowVelocityDenoiser,
    PredictionDenoiser,
    SamplePredictionDenoiser,
    VPredictionDenoiser,
    wrap_prediction,
)
from .base import Denoiser, ExactDenoiser, score_from_denoiser
from .empirical import EmpiricalDenoiser
from .gaussian import GaussianDenoiser
from .mixture import GaussianMixtureDenoiser
from .preconditioned import CategoricalDenoiser, PreconditionedDenoiser
from .rhm_bp import RHMBeliefPropagation

__all__ = [
    "Denoiser",
    "ExactDenoiser",
    "score_from_denoiser",
    "PreconditionedDenoiser",
    "CategoricalDenoiser",
    "EmpiricalDenoiser",
    "GaussianDenoiser",
    "GaussianMixtureDenoiser",
    "RHMBeliefPropagation",
    "PredictionDenoiser",
    "EpsilonPredictionDenoiser",
    "SamplePredictionDenoiser",
    "VPredictionDenoiser",
    "FlowVelocityDenoiser",
    "EDMDenoiser",
    "wrap_prediction",
]
