"""Are generated samples copies of training points? Two nearest-neighbour scores in pixel space.

* Memorized fraction (Carlini et al. 2023; Yoon et al. 2023; Gu et al. 2023; Bonnaire et al.): a sample
  ``x`` counts as memorized when ``||x - NN_1(x)|| / ||x - NN_2(x)|| < 1/3``, i.e. it is much closer to
  one training point than to any other.
* Relative nearest-neighbour distance, the "GL score" of Li, Dai, Qu (2024, App. B.1, eq. 14):
  ``GL = mean_i ||x_i - NN_1(x_i)|| / ||x_i||``. 0 for copies; the authors call GL > 0.6 generalizing, but
  that threshold depends on the data: compare with the GL of held-out real data (``reference`` below).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .neighbors import nearest_neighbors

__all__ = ["memorization_scores", "MEMORIZATION_RATIO"]

#: nearest / second-nearest distance ratio below which a sample counts as a training-set copy
MEMORIZATION_RATIO = 1.0 / 3.0


def memorization_scores(
    samples: Tensor, train: Tensor, *, ratio_threshold: float = MEMORIZATION_RATIO, chunk_size: int = 8192
) -> dict[str, Tensor]:
    """Nearest-neighbour memorization scores of ``samples [B, ...]`` against ``train [n, ...]`` (``n >= 2``).

    Returns (float64 / long tensors):

    * ``memorized_fraction`` — mean of ``d1 / d2 < ratio_threshold`` (``d1 = d2 = 0``, a copy of a
      duplicated training point, counts as memorized);
    * ``relative_nn_distance`` — the GL score ``mean_i d1_i / ||x_i||``;
    * per sample: ``distance_ratio`` ``d1 / d2``, ``nearest_distance`` ``d1``, ``nearest_index``.
    """
    if train.shape[0] < 2:
        raise ValueError("memorization_scores needs at least two training points (nearest and second nearest)")
    dist, index = nearest_neighbors(samples, train.to(samples.device), k=2, chunk_size=chunk_size)
    d1, d2 = dist[:, 0], dist[:, 1]
    ratio = torch.where(d2 > 0, d1 / d2.clamp_min(1e-300), torch.zeros_like(d1))
    norms = samples.reshape(samples.shape[0], -1).to(torch.float64).norm(dim=1).clamp_min(1e-300)
    return {
        "memorized_fraction": (ratio < ratio_threshold).to(torch.float64).mean(),
        "relative_nn_distance": (d1 / norms).mean(),
        "distance_ratio": ratio,
        "nearest_distance": d1,
        "nearest_index": index[:, 0],
    }
