"""Small test-only classes, importable by ``class_path`` from YAML/CLI (``tests.helpers.X``)."""

from __future__ import annotations

import torch

from diffuse_feat.data import DigitsDataModule


class DigitsWithNaN(DigitsDataModule):
    """Digits whose first training image is NaN: the loss of any batch containing it is NaN."""

    def build(self):
        x, y = super().build()
        x = x.clone()
        x[:] = torch.nan
        return x, y
