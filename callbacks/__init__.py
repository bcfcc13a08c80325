"""Lightning callbacks that schedule the diagnostics of ``diffuse_feat.diagnostics`` and log them, and :class:`EMA`
(Lightning's weight average without its warm-up trap)."""

from .base import DiagnosticCallback, diagnostic_mode, model_for_diagnostics
from .ema import EMA
from .feature_learning import FeatureLearningCallback
from .forward_backward import ForwardBackwardCallback
from .gaussian_structure import GaussianStructureCallback
from .regimes import RegimesCallback
from .samples import SampleGridCallback

__all__ = [
    "DiagnosticCallback",
    "EMA",
    "diagnostic_mode",
    "model_for_diagnostics",
    "SampleGridCallback",
    "GaussianStructureCallback",
    "RegimesCallback",
    "ForwardBackwardCallback",
    "FeatureLearningCallback",
]
