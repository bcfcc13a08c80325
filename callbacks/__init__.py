"""Lightning callbacks: each schedules a diagnostic of ``diffuse_feat.diagnostics`` during training and logs it.

A named callback is :class:`~diffuse_feat.diagnostic_callback.DiagnosticCallback` (when, on which weights, where to
log) with a measurement built from its arguments (what to measure); ``DiagnosticCallback(measurement)`` runs any
other, your own included. :class:`EMA` is Lightning's weight average without its warm-up trap. This package only
imports ``diffuse_feat``; nothing in ``diffuse_feat`` imports it.
"""

from diffuse_feat.diagnostic_callback import DiagnosticCallback, model_for_diagnostics
from diffuse_feat.diagnostics.measurement import diagnostic_mode
from diffuse_feat.ema import EMA

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
