"""The diagnostics ``analyze`` runs: a table from name to measurement class (:mod:`diffuse_feat.diagnostics`).

A diagnostic's settings are its measurement's constructor arguments (so its defaults and its checks are the only
ones). Where a setting fixes noise levels that a model trained on a narrower range cannot take (a DDPM table),
:func:`narrow` narrows it to the model's :class:`SigmaRange`, unless the user set it. Measurement classes of your own
are named by their dotted path (``my_module.MyMeasurement``).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from ..diagnostics.forward_backward import ForwardBackward
from ..diagnostics.gaussian_structure import GaussianStructure
from ..diagnostics.measurement import Measurement
from ..diagnostics.regimes import Regimes
from ..diagnostics.samples import Memorization, SampleGrid
from ..errors import ConfigError
from ..modules.checkpoint import import_object
from ..ou import OU

__all__ = ["DIAGNOSTICS", "Diagnostic", "SigmaRange", "diagnostic_named", "settings_defaults", "settings_names",
           "narrow", "build"]


@dataclass(frozen=True)
class SigmaRange:
    """The noise levels a run may use: the model's range, narrowed by ``--sigma-min`` / ``--sigma-max``."""

    model_min: float = 0.0
    model_max: float = math.inf
    requested_min: float | None = None
    requested_max: float | None = None

    def clip(self, low: float, high: float) -> tuple[float, float]:
        """A diagnostic's own range ``[low, high]``, or the requested one, inside the model's."""
        low = self.requested_min if self.requested_min is not None else max(low, self.model_min)
        high = self.requested_max if self.requested_max is not None else min(high, self.model_max)
        return low, high


@dataclass(frozen=True)
class Diagnostic:
    name: str
    summary: str
    measurement: type[Measurement]
    #: the name its callback logs under (``diagnostics.jsonl``, TensorBoard), so analyze writes what it would
    logged_as: str


DIAGNOSTICS: dict[str, Diagnostic] = {d.name: d for d in (
    Diagnostic("gaussian_structure", "linearity, distance to the Gaussian and empirical denoisers, Jacobian, linear "
               "distillation, samples (Li, Dai, Qu; GaussianStructureCallback)", GaussianStructure,
               "GaussianStructureCallback"),
    Diagnostic("regimes", "cloning (speciation) and collapse times against theory (Biroli et al.; RegimesCallback)",
               Regimes, "RegimesCallback"),
    Diagnostic("forward_backward", "forward-backward reconstruction, against exact BP on the RHM or read by a "
               "classifier on images (Sclocchi et al.; ForwardBackwardCallback)", ForwardBackward,
               "ForwardBackwardCallback"),
    Diagnostic("memorization", "the fraction of generated samples that copy a training point, and the GL score",
               Memorization, "memorization"),
    Diagnostic("sample_grid", "generated samples next to real ones, with their mean and std (SampleGridCallback)",
               SampleGrid, "SampleGridCallback"),
)}


def diagnostic_named(name: str) -> Diagnostic:
    """The table's entry, or a measurement class of the user's named by its dotted path."""
    if name in DIAGNOSTICS:
        return DIAGNOSTICS[name]
    found = import_object(name) if "." in name else None
    if not (isinstance(found, type) and issubclass(found, Measurement)):
        raise ConfigError(f"diagnostic {name!r} is not one of {', '.join(DIAGNOSTICS)}; pick one of those, or give "
                          "the dotted path of a Measurement class (my_module.MyMeasurement)")
    return Diagnostic(name, (found.__doc__ or "").strip().split("\n")[0], found, found.__name__)


def settings_defaults(measurement: type[Measurement]) -> dict[str, Any]:
    """The settings a measurement takes and their defaults: its constructor's arguments."""
    params = inspect.signature(measurement).parameters
    return {name: p.default for name, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def settings_names(measurement: type[Measurement]) -> list[str]:
    return list(settings_defaults(measurement))


def narrow(diagnostic: Diagnostic, settings: dict[str, Any], sigma_range: SigmaRange,
           explicit: set[str]) -> dict[str, Any]:
    """The settings with the measurement's noise levels (its ``noise_range()``) inside ``sigma_range``, except those
    the user set: ``sigma_min`` / ``sigma_max``, or for :class:`Regimes` the OU grid's ``t_min`` / ``t_max``."""
    own = build(diagnostic, settings)
    if own.noise_range() is None:
        return settings
    low, high = own.noise_range()
    new_low, new_high = sigma_range.clip(low, high)
    out = dict(settings)
    if isinstance(own, Regimes):
        if "t_max" not in explicit and new_high < high:
            out["t_max"] = float(OU.t_of_sigma(new_high))
        if "t_min" not in explicit and new_low > low:
            out["t_min"] = float(OU.t_of_sigma(new_low))
        return out
    names = settings_names(diagnostic.measurement)
    out.update({key: value for key, value in (("sigma_min", new_low), ("sigma_max", new_high))
                if key in names and key not in explicit})
    return out


def build(diagnostic: Diagnostic, settings: dict[str, Any]) -> Measurement:
    """The measurement with ``settings``, or one sentence naming what is wrong with the values."""
    try:
        return diagnostic.measurement(**settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{diagnostic.name} settings {settings}: {err}; fix them with --set name=value") from None
