"""scikit-learn's bundled 8x8 handwritten digits: real data that needs no download (1,797 images)."""

from __future__ import annotations

import torch

from .base import TensorDataModule
from .classes import keep_classes

__all__ = ["DigitsDataModule"]


class DigitsDataModule(TensorDataModule):
    """Digits scaled from ``0..16`` to ``[-1, 1]``, shape ``(1, 8, 8)``, 10 classes.

    ``classes`` keeps a subset of digits, relabelled ``0..k-1`` in the given order.
    """

    def __init__(
        self,
        batch_size: int = 128,
        n_train: int | None = None,
        n_val: int = 297,
        seed: int = 0,
        num_workers: int = 0,
        classes: list[int] | None = None,
    ):
        super().__init__(batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed, num_workers=num_workers)
        if classes is not None and (len(set(classes)) != len(classes) or not set(classes) <= set(range(10))):
            raise ValueError(f"data.classes must be distinct digits in 0..9, got {classes}")
        self.classes = classes
        self.data_shape = (1, 8, 8)
        self.num_classes = len(classes) if classes is not None else 10

    def build(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
        y = torch.as_tensor(digits.target, dtype=torch.long)
        return keep_classes(x, y, self.classes)
