"""A diagnostic as one object, in the spirit of torchmetrics' ``Metric``: it works inside and outside Lightning.

A :class:`Measurement` is built from its settings, declares the data capabilities it reads (:attr:`requires`),
measures any denoiser over a DataModule's data (``measure(denoiser, data, *, device, generator)``: in eval mode,
fp32 with autocast off, without gradients unless it differentiates the denoiser) and draws its figure from what
it measured (``figure(measured)``); a subclass implements :meth:`Measurement.compute`. Three thin callers use the
same object: a callback (``callbacks/``: when, on which weights, where to log), ``python -m diffuse_feat.analyze``
(once, on any model) and the reproductions. References that depend only on the data (a Gaussian denoiser's curves,
exact belief propagation) are computed at the first measurement on a DataModule and reused while it is the same one.

What a measurement finds is a :class:`Measured`: plain values (numbers, lists, the grid it used), the quantities
measured along a grid as :class:`Curve` objects, and the tensors its figure draws. The TensorBoard tags, line
names and ``diagnostics.jsonl`` keys of a curve are derived from it (:meth:`Curve.point_key`, :meth:`Curve.line`),
never parsed back out of a string.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..capabilities import check_capabilities

__all__ = ["Measurement", "Measured", "Curve", "seed_from", "plain", "device_of", "diagnostic_mode"]

#: how ``diagnostics.jsonl`` spells a point of a curve over each axis: ``p_class_s0.5``, ``phi_t0.5``, ``change_level2``
_POINT_PREFIX = {"sigma": "s", "t": "t", "level": "level"}


@dataclass(frozen=True)
class Curve:
    """One quantity at every point of a grid (noise levels ``sigma``, OU times ``t``, tree levels ``level``).

    TensorBoard shows it as one chart ``<name>_by_<axis>`` (Custom Scalars tab) with a line per point, the scalar
    ``<name>_by_<axis>/<line>``; ``diagnostics.jsonl`` holds each point as a number under :meth:`point_key`.
    """

    axis: str
    grid: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self):
        if self.axis not in _POINT_PREFIX:
            raise ValueError(f"a curve's axis is one of {', '.join(_POINT_PREFIX)}, got {self.axis!r}")
        if len(self.grid) != len(self.values):
            raise ValueError(f"a curve needs one value per grid point: {len(self.grid)} points, {len(self.values)} "
                             "values")
        object.__setattr__(self, "grid", tuple(float(g) for g in self.grid))
        object.__setattr__(self, "values", tuple(_number(v) for v in self.values))

    def chart(self, name: str) -> str:
        return f"{name}_by_{self.axis}"

    def line(self, point: float) -> str:
        """The line of one grid point in its chart, e.g. ``sigma=0.5``."""
        return f"{self.axis}={point:g}"

    def point_key(self, name: str, point: float) -> str:
        """The ``diagnostics.jsonl`` key of one grid point, e.g. ``p_class_s0.5``."""
        return f"{name}_{_POINT_PREFIX[self.axis]}{point:g}"

    def points(self) -> Iterator[tuple[float, float]]:
        return zip(self.grid, self.values, strict=True)


def _number(value: Any) -> float:
    return float(value.item() if isinstance(value, Tensor) else value)


def plain(value: Any) -> Any:
    """Tensors and arrays as Python numbers and nested lists, recursively through dicts, lists and tuples (tuples
    become lists); NaN stays NaN (:func:`diffuse_feat.reporting.to_jsonable` writes it as null)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass
class Measured:
    """What one measurement found.

    Attributes:
        values: numbers and arrays by name (floats, nested lists, dicts of lists; the grids used among them): what
            ``diagnostics.jsonl`` records, together with every point of every curve.
        curves: the quantities measured along a grid, by name.
        artifacts: what the figure draws and nothing records (generated samples, say).
    """

    values: dict[str, Any]
    curves: dict[str, Curve] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The values and one number per curve point (``p_class_s0.5``): a ``diagnostics.jsonl`` record's values."""
        out = dict(self.values)
        for name, curve in self.curves.items():
            out.update({curve.point_key(name, point): value for point, value in curve.points()})
        return out

    def scalars(self) -> dict[str, float]:
        """The finite numbers among :attr:`values` (booleans aside): one TensorBoard scalar each."""
        return {key: float(value) for key, value in self.values.items()
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


def seed_from(seed: int, generator: torch.Generator | None) -> int:
    """The seed a measurement uses: its own ``seed`` setting (the same probes and noise at every call, so successive
    measurements of a training run are comparable) or, given a generator, a fresh one drawn from it (independent
    repetitions)."""
    if generator is None:
        return seed
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


class Measurement:
    """Base class of a diagnostic: subclass it, take the settings in ``__init__`` (a ``seed`` among them), implement
    :meth:`compute` (and :meth:`figure`). A measurement object is cheap to build; what depends only on the data it
    computes once per DataModule with :meth:`cached`.

    Class attributes:
        name: its default logging name (a generic ``DiagnosticCallback``'s) and, for built-ins, analyze's.
        requires: the capabilities (:mod:`diffuse_feat.capabilities`) :meth:`compute` reads from the data.
        needs_grad: whether :meth:`compute` differentiates the denoiser (Jacobians).
    """

    name: str = "measurement"
    requires: tuple[type, ...] = ()
    needs_grad: bool = False
    seed: int = 0

    def noise_range(self) -> tuple[float, float] | None:
        """The lowest and highest noise level (sigma) at which the denoiser is evaluated, where the settings fix
        them (analyze narrows them to a model's range); None if they do not."""
        return None

    def required_capabilities(self) -> tuple[type, ...]:
        """What :meth:`measure` will read from the data (default :attr:`requires`; override when it depends on the
        settings)."""
        return self.requires

    def missing_capability_hint(self) -> str:
        """What else the user can do when the data lacks a capability (e.g. another setting)."""
        return ""

    def check(self, data, *, model=None, needed_by: str | None = None) -> None:
        """Stops with one sentence naming ``needed_by`` (default :attr:`name`) if ``data`` lacks a capability this
        measurement reads (or, where it matters, if ``model`` cannot be measured): a callback calls it in ``setup``,
        before the first training step.

        Raises:
            MissingGroundTruth: ``data`` lacks a capability.
        """
        check_capabilities(data, self.required_capabilities(), needed_by=needed_by or self.name,
                           hint=self.missing_capability_hint())

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run must restore (a callback saves it in checkpoints): nothing, unless a measurement keeps
        state across calls."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def measure(self, denoiser, data, *, device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> Measured:
        """Measure ``denoiser`` (anything callable as ``D(x, sigma)``: a trained module or an exact reference) over
        ``data`` (a DataModule with the :attr:`requires` capabilities) on ``device`` (default: the denoiser's):
        :meth:`compute` in :func:`diagnostic_mode`. Randomness: :func:`seed_from`.

        Raises:
            MissingGroundTruth: if ``data`` lacks a capability this measurement reads.
        """
        if generator is not None:
            return self.with_seed(seed_from(self.seed, generator)).measure(denoiser, data, device=device)
        self.cached(data, "capabilities checked", lambda: self.check(data))
        device = device_of(denoiser, device)
        with diagnostic_mode(denoiser, grad=self.needs_grad):
            return self.compute(denoiser, data, device)

    def compute(self, denoiser, data, device: torch.device) -> Measured:
        """The measurement itself (what a subclass implements): ``denoiser`` is in eval mode, autocast is off and
        gradients are off unless :attr:`needs_grad`; use ``self.seed`` for every random choice."""
        raise NotImplementedError

    def with_seed(self, seed: int) -> Measurement:
        """A copy of this measurement with another ``seed`` (and none of its cached references)."""
        other = copy.copy(self)
        other.__dict__.pop("_cache_owner", None)
        other.__dict__.pop("_cache", None)
        other.seed = seed
        return other

    def figure(self, measured: Measured, *, title: str | None = None, history: list[dict] | None = None):
        """A matplotlib figure of ``measured`` (drawn with :mod:`diffuse_feat.plotting`), or None. ``history``: the
        records of the earlier measurements of a training run and this one (``{"step", **record}``), for figures
        that draw curves over training."""
        return None

    # ----- helpers for subclasses ---------------------------------------------------------------------------------
    def cached(self, data, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per DataModule ``data`` and ``key`` (a device, say): references of the data that every
        measurement on it reuses. Another DataModule starts afresh."""
        owner = getattr(self, "_cache_owner", None)
        if owner is None or owner() is not data:
            self._cache_owner = weakref.ref(data)
            self._cache: dict[str, Any] = {}
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def __getstate__(self) -> dict:  # a measurement travels to worker processes without its data's references
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache_owner", "_cache")}


def device_of(denoiser, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else where the denoiser's first parameter or buffer lives (CPU for one with none)."""
    if device is not None:
        return torch.device(device)
    if isinstance(denoiser, torch.nn.Module):
        for tensor in itertools.chain(denoiser.parameters(), denoiser.buffers()):
            return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def diagnostic_mode(model, *, grad: bool = False) -> Iterator[Any]:
    """Eval mode, autocast off, (no) grad; restores the previous training flag afterwards. Every diagnostic runs
    in fp32 this way, whatever precision training uses."""
    is_module = isinstance(model, torch.nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    device_type = device_of(model).type
    try:
        with torch.autocast(device_type=device_type, enabled=False), torch.set_grad_enabled(grad):
            yield model
    finally:
        if is_module:
            model.train(was_training)
