"""Lightning callbacks that schedule the diagnostics of ``diffuse_feat.diagnostics`` and log them."""

from .base import DiagnosticCallback, diagnostic_mode, model_for_diagnostics
from .feature_learning import FeatureLearningCallback
from .forward_backward import ForwardBackwardCallback
from .gaussian_structure import GaussianStructureCallback
from .regimes import RegimesCallback
from .samples import SampleGridCallback

__all__ = [
    "DiagnosticCallback",
    "diagnostic_mode",
    "model_for_diagnostics",
    "SampleGridCallback",
    "GaussianStructureCallback",
    "RegimesCallback",
    "ForwardBackwardCallback",
    "FeatureLearningCallback",
]
