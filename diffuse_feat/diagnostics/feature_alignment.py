"""Signal learning vs noise memorization of first-layer filters (Han, Huang, Cao, Zou 2024; Cao et al. 2022).

For filters ``w_r`` (rows of ``W [m, d]``), class signal vectors ``mu_j`` and the training noise patches
``xi_i``, the alignments are ``<w_r, mu_j>`` and ``<w_r, xi_i>``. The paper tracks

    signal  S = mean_j max_r <w_r, mu_j>,          noise  N = mean_i max_r <w_r, xi_i>,     ratio S / N,

where, for a classifier whose filters each feed one class logit, the max runs over the filters of class
``j`` (signal) or of the sample's own class ``y_i`` (noise). With ``s(z) = z^2`` an overlap grows from
its initial sign either way, so the ``max_r |.|`` variants (``*_abs``) are reported as well.

In the denoiser's early (linear) phase every filter moves along the same direction ``sum_i sum_p x_i^(p)``
(note §4.2), so the increments of the alignments obey :func:`linear_phase_increment_ratio`:
about ``n_j ||mu||^2 / ||xi||^2 = n SNR^2 / 2`` on two-patch data.

Everything works on any backbone whose first layer is linear; filters that see the whole input
rather than one patch are cut into per-patch views by :func:`patch_view`. :class:`FeatureAlignment` is the
measurement: it reads the filters of a model (``backbone.first_layer_filters()``: ``PatchNet``, ``MLP``) and measures

* ``signal``, ``noise``, ``ratio`` (and ``*_abs``), per class for a classifier whose filters feed one logit each
  (``backbone.filter_classes()``), the quantities of Han et al.'s Figure 2;
* ``signal_increment``, ``noise_increment``, ``increment_ratio``: mean changes since its first measurement, and
  ``increment_ratio_theory``, the denoiser's linear-phase prediction (``~ n SNR^2 / 2`` on two-patch data);
* ``signal_per_class``, ``noise_per_sample`` (lists).

The directions come from the data (``PlantedFeatures``: ``signal_vectors()``, ``noise_patches()``). For data without
known directions, ``directions`` given by the user are measured instead: ``direction<k>_max``, ``_max_abs``,
``_mean_abs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..capabilities import PlantedFeatures, TrainingSet
from ..errors import ConfigError, ShapeError
from ..plotting.feature_learning import alignment_figure
from .measurement import Measured, Measurement, plain

__all__ = [
    "FeatureAlignment",
    "load_directions",
    "alignments",
    "patch_view",
    "feature_learning_summary",
    "alignment_increments",
    "linear_phase_increment_ratio",
    "direction_summary",
]


def alignments(filters: Tensor, directions: Tensor) -> Tensor:
    """``[m, k]`` matrix of ``<w_r, u_k>`` (float64) for filters ``[m, d]`` and directions ``[k, d]``."""
    if filters.shape[-1] != directions.shape[-1]:
        raise ValueError(f"filters have {filters.shape[-1]} features but the directions have {directions.shape[-1]}")
    return filters.detach().to(torch.float64) @ directions.detach().to(device=filters.device, dtype=torch.float64).T


def patch_view(filters: Tensor, data_shape: Sequence[int], patch: int) -> Tensor:
    """The part of each filter that reads patch ``patch`` of inputs shaped ``(P, d)``.

    Filters of width ``d`` are shared across patches (a patch network) and returned as they are; filters
    of width ``P * d`` see the flattened input (an MLP's first layer) and their ``patch``-th block is returned.
    """
    num_patches, patch_dim = int(data_shape[0]), int(torch.Size(data_shape[1:]).numel())
    width = filters.shape[1]
    if width == patch_dim:
        return filters
    if width == num_patches * patch_dim:
        return filters.reshape(filters.shape[0], num_patches, patch_dim)[:, patch]
    raise ValueError(f"filters of width {width} fit neither one patch ({patch_dim}) nor the whole input "
                     f"({num_patches} x {patch_dim})")


def _own_class_max(alignment: Tensor, column_classes: Tensor, filter_classes: Tensor | None) -> Tensor:
    """``max_r alignment[r, k]`` over the filters ``r`` that feed column ``k``'s class (all filters if unassigned)."""
    if filter_classes is None:
        return alignment.amax(0)
    own = filter_classes.to(alignment.device).reshape(-1, 1) == column_classes.to(alignment.device).reshape(1, -1)
    if not bool(own.any(0).all()):
        raise ValueError("some class has no filters: every column's class must appear in filter_classes")
    return alignment.masked_fill(~own, float("-inf")).amax(0)


def feature_learning_summary(
    signal_alignment: Tensor, noise_alignment: Tensor, labels: Tensor, filter_classes: Tensor | None = None
) -> dict[str, float | list[float]]:
    """The paper's aggregates from ``<w_r, mu_j>`` (``[m, K]``, column ``j`` = class ``j``) and
    ``<w_r, xi_i>`` (``[m, n]``, sample ``i`` of class ``labels[i]``).

    Returns ``signal``, ``noise``, ``ratio`` (max over filters), their ``*_abs`` variants (max of ``|.|``),
    ``signal_per_class`` ``[K]`` and ``noise_per_sample`` ``[n]``.
    """
    signal_classes = torch.arange(signal_alignment.shape[1])
    out: dict[str, float | list[float]] = {}
    for suffix, transform in (("", lambda a: a), ("_abs", torch.abs)):
        per_class = _own_class_max(transform(signal_alignment), signal_classes, filter_classes)
        per_sample = _own_class_max(transform(noise_alignment), labels, filter_classes)
        signal, noise = float(per_class.mean()), float(per_sample.mean())
        out[f"signal{suffix}"], out[f"noise{suffix}"] = signal, noise
        out[f"ratio{suffix}"] = signal / noise if noise != 0 else float("nan")
        if not suffix:
            out["signal_per_class"], out["noise_per_sample"] = per_class.tolist(), per_sample.tolist()
    return out


def alignment_increments(
    signal_alignment: Tensor,
    noise_alignment: Tensor,
    initial_signal_alignment: Tensor,
    initial_noise_alignment: Tensor,
    labels: Tensor,
    filter_classes: Tensor | None = None,
) -> dict[str, float]:
    """Mean increments since initialisation over every (filter, direction) pair that the aggregates use:
    ``signal_increment = mean_{r,j} Delta<w_r, mu_j>``, ``noise_increment = mean_{r,i} Delta<w_r, xi_i>``
    and their ratio ``increment_ratio`` (note AC-D1: compare it early in training with
    :func:`linear_phase_increment_ratio`)."""

    def own_mean(delta: Tensor, column_classes: Tensor) -> Tensor:
        if filter_classes is None:
            return delta.mean()
        own = filter_classes.to(delta.device).reshape(-1, 1) == column_classes.to(delta.device).reshape(1, -1)
        return delta[own].mean()

    d_signal = own_mean(signal_alignment - initial_signal_alignment, torch.arange(signal_alignment.shape[1]))
    d_noise = own_mean(noise_alignment - initial_noise_alignment, labels)
    ratio = float(d_signal / d_noise) if float(d_noise) != 0 else float("nan")
    return {"signal_increment": float(d_signal), "noise_increment": float(d_noise), "increment_ratio": ratio}


def linear_phase_increment_ratio(train_inputs: Tensor, signal_vectors: Tensor, noise_patches: Tensor) -> float:
    """Predicted ``increment_ratio`` of the tied quadratic denoiser in its linear phase (note §4.2).

    Near a small initialisation the noise-prediction gradient moves every filter along
    ``s = sum_i sum_p x_i^(p)`` at a rate independent of its alignments, so
    ``Delta<w, u> ∝ <s, u>`` and the ratio is ``mean_j <s, mu_j> / mean_i <s, xi_i>``. On two-patch data
    (noise orthogonal to the signals) this is ``mean_j n_j ||mu||^2 / mean_i (||xi_i||^2 + sum_{k != i}
    <xi_k, xi_i>) ≈ n SNR^2 / 2``.

    Args:
        train_inputs: ``[n, P, d]``; signal_vectors: ``[K, d]``; noise_patches: ``[n, d]``.
    """
    s = train_inputs.to(torch.float64).sum(dim=(0, 1))
    along_signal = (signal_vectors.to(torch.float64) @ s).mean()
    along_noise = (noise_patches.to(torch.float64) @ s).mean()
    return float(along_signal / along_noise)


def direction_summary(alignment: Tensor, prefix: str = "direction") -> dict[str, float | list[float]]:
    """For user-given directions (data without known features): per direction ``k``, ``max_r <w_r, u_k>``,
    ``max_r |<w_r, u_k>|`` and ``mean_r |<w_r, u_k>|`` as scalars ``<prefix><k>_max`` etc. and lists."""
    out: dict[str, float | list[float]] = {}
    stats = {"max": alignment.amax(0), "max_abs": alignment.abs().amax(0), "mean_abs": alignment.abs().mean(0)}
    for name, values in stats.items():
        out[f"{prefix}_{name}"] = values.tolist()
        for k, v in enumerate(values.tolist()):
            out[f"{prefix}{k}_{name}"] = v
    return out


NO_DIRECTIONS_HINT = (
    "pass directions=... (a [k, filter_width] tensor, nested list, or a .pt/.npy file) to project the filters onto "
    "directions of your choice"
)


def load_directions(directions: Tensor | Sequence[Sequence[float]] | str) -> Tensor:
    """User-given directions ``[k, filter_width]`` (float64) from a tensor, a nested list or a ``.pt``/``.npy`` file."""
    if isinstance(directions, str | Path):
        path = Path(directions)
        if not path.is_file():
            raise ConfigError(f"FeatureLearningCallback.directions: no file '{path}'; give a .pt or .npy file")
        data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu", weights_only=True)
        directions = torch.as_tensor(data)
    out = torch.as_tensor(directions, dtype=torch.float64)
    return out.reshape(1, -1) if out.ndim == 1 else out


def _backbone(model):
    return getattr(model, "backbone", model)  # a module's backbone (the EMA copy's when there is one)


class FeatureAlignment(Measurement):
    """Alignment of a model's first-layer filters with the signal vectors and the training noise patches.

    Args:
        directions: user-given directions ``[k, filter_width]`` for data without known features (tensor, nested list
            or a ``.pt``/``.npy`` path); when set, only their projections are measured.
        seed: unused (nothing is drawn: the probes are the whole training set's noise patches); kept so that every
            measurement takes one.

    The first measurement's alignments are the reference of the increments (:meth:`state_dict` keeps them, so a
    resumed run continues them).
    """

    name = "feature_alignment"

    def __init__(self, directions: Tensor | Sequence[Sequence[float]] | str | None = None, seed: int = 0):
        self.directions = load_directions(directions) if directions is not None else None
        self.seed = seed
        self.initial: dict[str, Tensor] | None = None  # alignments at the first measurement (for increments)

    def required_capabilities(self) -> tuple[type, ...]:
        return () if self.directions is not None else (TrainingSet, PlantedFeatures)

    def missing_capability_hint(self) -> str:
        return NO_DIRECTIONS_HINT

    def check(self, data, *, model=None, needed_by: str | None = None) -> None:
        """As :meth:`Measurement.check`, and the model's backbone must expose its first-layer filters."""
        super().check(data, model=model, needed_by=needed_by)
        backbone = _backbone(model)
        if model is not None and not callable(getattr(backbone, "first_layer_filters", None)):
            raise ConfigError(
                f"{needed_by or self.name} needs a backbone with a linear first layer exposing first_layer_filters() "
                f"(e.g. PatchNet, MLP); {type(backbone).__name__} has none"
            )

    def references(self, data, data_shape) -> dict[str, Any]:
        """The data's directions, labels and linear-phase theory (computed once per DataModule)."""
        def compute():
            refs: dict[str, Any] = {"data_shape": tuple(data_shape)}
            refs["signal"], refs["noise"] = data.signal_vectors().double(), data.noise_patches().double()
            refs["labels"] = data.train_labels()
            refs["patches"] = (data.signal_patch, data.noise_patch)
            refs["theory"] = linear_phase_increment_ratio(data.train_tensor(), refs["signal"], refs["noise"])
            return refs

        return self.cached(data, "references", compute)

    def compute(self, model, data, device: torch.device) -> Measured:
        backbone = _backbone(model)
        filters = backbone.first_layer_filters()
        classes = backbone.filter_classes() if callable(getattr(backbone, "filter_classes", None)) else None
        if self.directions is not None:
            if self.directions.shape[1] != filters.shape[1]:
                raise ShapeError(f"{self.name}: directions have {self.directions.shape[1]} features but the "
                                 f"first-layer filters have {filters.shape[1]}; give directions of that width")
            projection = alignments(filters, self.directions)
            return Measured(plain(direction_summary(projection)), artifacts={
                "last": {"directions": projection.cpu()}, "filter_classes": classes})
        refs = self.references(data, model.data_shape)
        signal_patch, noise_patch = refs["patches"]
        signal = alignments(patch_view(filters, refs["data_shape"], signal_patch), refs["signal"])
        noise = alignments(patch_view(filters, refs["data_shape"], noise_patch), refs["noise"])
        labels = refs["labels"].to(signal.device)
        if self.initial is None:
            self.initial = {"signal": signal.cpu(), "noise": noise.cpu()}
        values = feature_learning_summary(signal, noise, labels, classes)
        values.update(alignment_increments(signal, noise, self.initial["signal"].to(signal.device),
                                           self.initial["noise"].to(signal.device), labels, classes))
        values["increment_ratio_theory"] = refs["theory"]
        return Measured(plain(values), artifacts={"last": {"signal": signal.cpu(), "noise": noise.cpu()},
                                                  "filter_classes": classes, "theory": refs["theory"]})

    def figure(self, measured: Measured, *, title: str | None = None, history: list[dict] | None = None):
        art = measured.artifacts
        return alignment_figure(art["last"], history or [], art.get("theory"), art["filter_classes"])

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state.get("initial")
