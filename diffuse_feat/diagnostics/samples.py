"""What generated samples say by themselves: their first two moments against the data's, and how many copy a
training point (the sample-grid and memorization diagnostics; the samples come from
:func:`diffuse_feat.samplers.generate`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .memorization import memorization_scores

__all__ = ["sample_statistics", "sample_memorization"]


def sample_statistics(samples: Tensor, real: Tensor | None = None) -> dict[str, float]:
    """``sample_mean``, ``sample_std`` of the samples and, with ``real`` data, ``data_mean``, ``data_std``."""
    values = {"sample_mean": samples.mean().item(), "sample_std": samples.std().item()}
    if real is not None:
        values.update(data_mean=real.mean().item(), data_std=real.std().item())
    return values


def sample_memorization(samples: Tensor, train: Tensor) -> tuple[dict[str, Any], Tensor]:
    """:func:`~diffuse_feat.diagnostics.memorization.memorization_scores` of the samples as numbers and per-sample
    lists (``memorized_fraction``, ``relative_nn_distance``, ``distance_ratio``, ``nearest_distance``,
    ``nearest_index``), and the nearest training point of each sample."""
    scores = memorization_scores(samples, train)
    values = {key: value.item() if value.ndim == 0 else value.tolist() for key, value in scores.items()}
    return values, train[scores["nearest_index"].to(train.device)]
