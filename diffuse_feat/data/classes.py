"""A subset of a labelled dataset's classes, relabelled ``0..k-1`` in the order given: the ``classes`` setting every
labelled DataModule has (digits, MNIST 5k, the torchvision sets, ImageFolder)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["checked_classes", "keep_classes"]


def checked_classes(classes: list[int] | None, num_labels: int | None, dataset: str) -> list[int] | None:
    """``classes`` as ints, or one sentence if they are empty, repeated or (when ``num_labels`` is known) out of
    ``0..num_labels-1``."""
    if classes is None:
        return None
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ConfigError(f"data.classes for {dataset} must be distinct labels (non-empty), got {classes}")
    if num_labels is not None and not all(0 <= c < num_labels for c in classes):
        raise ConfigError(f"data.classes for {dataset} must lie in 0..{num_labels - 1}, got {classes}")
    return classes


def keep_classes(x: Tensor, labels: Tensor, classes: list[int] | None) -> tuple[Tensor, Tensor]:
    """The samples whose label is in ``classes``, relabelled by position (``[1, 8]``: 1 -> 0, 8 -> 1); all of them
    unchanged when ``classes`` is None."""
    if classes is None:
        return x, labels
    wanted = torch.tensor(classes)
    keep = torch.isin(labels, wanted)
    new_label = torch.full((max(int(labels.max()), max(classes)) + 1,), -1, dtype=torch.long)
    new_label[wanted] = torch.arange(len(classes))
    return x[keep], new_label[labels[keep]]
