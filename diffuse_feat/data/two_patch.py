"""Two-patch signal/noise data (Han, Huang, Cao, Zou 2024, Definition 2.1) and a Noisy-MNIST-style variant.

A sample is ``x = [x^(1), x^(2)]`` of shape ``(2, d)`` with a label ``y in {-1, +1}``: the signal patch
``x^(1)`` carries the class, the noise patch ``x^(2) = xi`` does not. The quantity that decides what a
classifier learns is ``n * SNR^2`` with ``SNR = ||mu|| / (sigma_xi sqrt(d))``.

Labels are stored as class indices for the framework: ``class = (y + 1) / 2``, i.e. ``y = -1 -> 0`` and
``y = +1 -> 1``, so a two-class classifier's ``F_1 - F_0`` is the paper's ``F_{+1} - F_{-1}``. Every
ground-truth tensor indexed by class follows the same order (``signal_vectors()[c]`` is class ``c``'s).

The training set is exactly balanced (``n // 2`` of class 0, the rest class 1, in a seeded random order)
and ``n_val`` fresh samples form the test set, which is what the paper's theory and test error assume.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..capabilities import PlantedFeatures
from ..errors import ConfigError
from .base import EpochSeededSampler, TensorDataModule, tensor_loader
from .digits import DigitsDataModule

__all__ = ["TwoPatchDataModule", "NoisyImagePatchDataModule"]


class _SignalNoisePatches(TensorDataModule, PlantedFeatures):
    """What both two-patch DataModules share: the balanced split, the full-batch loader and the ground truth
    the feature-learning diagnostic reads (:meth:`signal_vectors`, :meth:`noise_patches`, ``snr``, ``n_snr2``).

    Subclasses implement :meth:`build` returning ``n_train`` training points first (balanced), then
    ``n_val`` test points, and :meth:`signal_vectors`.
    """

    #: which patch holds the signal and which the noise (``x[:, signal_patch]``, ``x[:, noise_patch]``)
    signal_patch: int = 0
    noise_patch: int = 1

    def __init__(self, n_train: int, n_val: int, batch_size: int | None, passes_per_epoch: int, seed: int,
                 num_workers: int):
        if n_train is None or n_train < 2:
            raise ConfigError(f"data.n_train must be an integer >= 2 (one sample per class at least), got {n_train}")
        if passes_per_epoch < 1:
            raise ConfigError(f"data.passes_per_epoch must be >= 1, got {passes_per_epoch}")
        super().__init__(batch_size=batch_size or n_train, n_train=n_train, n_val=n_val, seed=seed,
                         num_workers=num_workers)
        self.passes_per_epoch = passes_per_epoch
        self.num_classes = 2

    def train_dataloader(self) -> DataLoader:
        # full-batch GD makes one step per pass; Lightning's per-epoch overhead would dominate a one-step epoch
        x, y, _, _ = self._ensure_split()
        sampler = EpochSeededSampler(x.shape[0], self.seed, length=x.shape[0] * self.passes_per_epoch)
        return tensor_loader((x, y), min(self.batch_size, x.shape[0]), sampler, self.num_workers)

    def _ensure_split(self):
        # the split is part of the model (balanced training set, fresh test set), so build() lays it out
        # directly instead of the base class drawing a random subset of a pool
        if self._split is None:
            x, y = self.build()
            n = self.n_train
            self._split = tuple(t.contiguous() for t in (x[:n], y[:n], x[n:], y[n:]))
        return self._split

    @staticmethod
    def balanced_labels(n: int, generator: torch.Generator) -> Tensor:
        """``n // 2`` zeros and ``n - n // 2`` ones in a random order."""
        y = torch.cat([torch.zeros(n // 2, dtype=torch.long), torch.ones(n - n // 2, dtype=torch.long)])
        return y[torch.randperm(n, generator=generator)]

    # ----- ground truth -------------------------------------------------------------------------
    def signal_vectors(self) -> Tensor:
        """``[2, d]``: the direction each class's signal patch carries, in class-index order."""
        raise NotImplementedError

    def noise_patches(self) -> Tensor:
        """``[n, d]``: every training sample's noise patch ``xi_i``, in training order."""
        return self.train_tensor()[:, self.noise_patch]

    def signal_patches(self) -> Tensor:
        """``[n, d]``: every training sample's signal patch ``x_i^(1)``."""
        return self.train_tensor()[:, self.signal_patch]

    def train_signs(self) -> Tensor:
        """The paper's labels ``y_i = 2 c_i - 1 in {-1, +1}`` of the training set."""
        return 2 * self.train_labels() - 1

    @property
    def n_snr2(self) -> float:
        """``n * SNR^2``, the quantity the classification phase transition depends on."""
        return self.n_train * self.snr**2


class TwoPatchDataModule(_SignalNoisePatches):
    """Definition 2.1: ``x^(1) = mu_y``, ``x^(2) = xi ~ N(0, sigma_xi^2 (I - P_mu))``, SNR ``||mu||/(sigma_xi sqrt d)``.

    ``mu_{+1} ⊥ mu_{-1}``, both of norm ``||mu||``; ``P_mu`` projects onto their span, so every noise patch
    is orthogonal to both signals. Give the signal strength as ``snr`` or as ``mu_norm`` (not both; default
    ``mu_norm = 15``, i.e. ``n SNR^2 = 6.75`` at ``n = 30, d = 1000``: the paper's high-SNR setting).

    Args:
        n_train: training samples ``n`` (exactly balanced); n_val: fresh test samples.
        d: features per patch.
        snr / mu_norm: signal strength; sigma_xi: noise standard deviation.
        signal_basis: ``"coordinate"`` (``mu_{-1} = ||mu|| e_1``, ``mu_{+1} = ||mu|| e_2``, the paper's choice)
            or ``"random"`` (a seeded random orthonormal pair, for backbones that are not rotation invariant).
        batch_size: default ``n_train`` (full-batch gradient descent: one optimizer step per pass).
        passes_per_epoch: passes over the training set per Lightning epoch (e.g. 100 full-batch steps).
    """

    def __init__(
        self,
        n_train: int = 30,
        d: int = 1000,
        snr: float | None = None,
        mu_norm: float | None = None,
        sigma_xi: float = 1.0,
        signal_basis: str = "coordinate",
        n_val: int = 1000,
        batch_size: int | None = None,
        passes_per_epoch: int = 1,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(n_train, n_val, batch_size, passes_per_epoch, seed, num_workers)
        if d < 3:
            raise ConfigError(f"data.d must be >= 3 (two signal directions and room for noise), got {d}")
        if snr is not None and mu_norm is not None:
            raise ConfigError("give data.snr or data.mu_norm, not both (mu_norm = snr * sigma_xi * sqrt(d))")
        if sigma_xi <= 0:
            raise ConfigError(f"data.sigma_xi must be > 0, got {sigma_xi}")
        if signal_basis not in ("coordinate", "random"):
            raise ConfigError(f"data.signal_basis must be 'coordinate' or 'random', got {signal_basis!r}")
        self.d, self.sigma_xi, self.signal_basis = d, float(sigma_xi), signal_basis
        if mu_norm is None:
            mu_norm = 15.0 if snr is None else snr * sigma_xi * math.sqrt(d)
        if mu_norm < 0:
            raise ConfigError(f"data.snr / data.mu_norm must be >= 0, got {mu_norm}")
        self.mu_norm = float(mu_norm)
        self.data_shape = (2, d)
        self._basis = self._signal_basis()

    @property
    def snr(self) -> float:
        """``||mu|| / (sigma_xi sqrt(d))``."""
        return self.mu_norm / (self.sigma_xi * math.sqrt(self.d))

    def _signal_basis(self) -> Tensor:
        """``[2, d]`` orthonormal rows: the unit directions of ``mu_{-1}`` and ``mu_{+1}``."""
        if self.signal_basis == "coordinate":
            return torch.eye(2, self.d, dtype=torch.float64)
        g = torch.Generator().manual_seed(self.seed + 15485863)
        q, _ = torch.linalg.qr(torch.randn(self.d, 2, generator=g, dtype=torch.float64))
        return q.T.contiguous()

    def signal_vectors(self) -> Tensor:
        """``[2, d]``: row ``c`` is ``mu_y`` for ``y = 2c - 1`` (row 0 ``mu_{-1}``, row 1 ``mu_{+1}``)."""
        return (self.mu_norm * self._basis).float()

    def build(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        y = torch.cat([self.balanced_labels(self.n_train, g), torch.randint(2, (self.n_val,), generator=g)])
        z = torch.randn(y.shape[0], self.d, generator=g, dtype=torch.float64)
        noise = self.sigma_xi * (z - (z @ self._basis.T) @ self._basis)  # (I - P_mu) z: orthogonal to both signals
        signal = self.mu_norm * self._basis[y]
        return torch.stack([signal, noise], dim=1).float(), y

    def describe(self) -> dict:
        return {**super().describe(), "d": self.d, "mu_norm": self.mu_norm, "sigma_xi": self.sigma_xi,
                "snr": self.snr, "n_snr2": self.n_snr2}


class NoisyImagePatchDataModule(_SignalNoisePatches):
    """Noisy-MNIST-style data: a real image as the signal patch next to a Gaussian noise patch ``N(0, sigma_xi^2 I)``.

    Images come from ``images``, any labeled image DataModule with two classes whose pixels lie in
    ``[-1, 1]`` (default: scikit-learn's digits 0 vs 1, no download; ``MNISTDataModule(root=..., classes=[0, 1])``
    reads MNIST from a local folder). Pixels are mapped to ``[0, 1]`` (background 0, as in MNIST),
    optionally enlarged ``upsample`` times per side (nearest neighbour; 8x8 digits with ``upsample = 4`` give
    ``d = 1024``, close to MNIST's 784), flattened, and all multiplied by one factor so that the root mean
    square image norm over the whole pool is ``snr * sigma_xi * sqrt(d)``: ``SNR`` is exact on average and
    images keep their relative contrast.

    The training set draws ``n_train // 2`` images of class 0 and the rest of class 1 without replacement; the
    test set draws ``n_val`` of the remaining images. Ground truth: :meth:`signal_vectors` are the two
    class-mean training images (not orthogonal: both digits share ink), :meth:`noise_patches` the ``xi_i``.
    """

    def __init__(
        self,
        images: TensorDataModule | None = None,
        n_train: int = 20,
        snr: float = 0.2,
        sigma_xi: float = 1.0,
        upsample: int = 4,
        n_val: int = 200,
        batch_size: int | None = None,
        passes_per_epoch: int = 1,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(n_train, n_val, batch_size, passes_per_epoch, seed, num_workers)
        if snr < 0 or sigma_xi <= 0 or upsample < 1:
            raise ConfigError(f"need data.snr >= 0, sigma_xi > 0, upsample >= 1; got {snr}, {sigma_xi}, {upsample}")
        self.images = images if images is not None else DigitsDataModule(classes=[0, 1], n_val=0)
        if self.images.num_classes != 2:
            raise ConfigError(
                f"data.images must have exactly 2 classes (set its classes, e.g. [0, 1]), "
                f"{type(self.images).__name__} has {self.images.num_classes}"
            )
        self._snr, self.sigma_xi, self.upsample = float(snr), float(sigma_xi), upsample
        h, w = self.images.data_shape[-2:]
        self.image_shape = (int(h) * upsample, int(w) * upsample)
        self.d = self.image_shape[0] * self.image_shape[1] * math.prod(self.images.data_shape[:-2])
        self.data_shape = (2, self.d)

    @property
    def snr(self) -> float:
        """``rms_i ||x_i^(1)|| / (sigma_xi sqrt(d))`` over the image pool (exact by construction)."""
        return self._snr

    def _image_pool(self) -> tuple[Tensor, Tensor]:
        """All images of the source, in ``[0, 1]``, enlarged, flattened and scaled to the SNR; and their labels."""
        self.images.setup()
        x = torch.cat([self.images.train_tensor(), self.images.val_tensor()]).double()
        y = torch.cat([self.images.train_labels(), self.images.val_labels()])
        x = (x + 1) / 2
        if self.upsample > 1:
            x = x.repeat_interleave(self.upsample, dim=-2).repeat_interleave(self.upsample, dim=-1)
        x = x.reshape(x.shape[0], -1)
        rms_norm = x.square().sum(1).mean().sqrt()
        return x * (self._snr * self.sigma_xi * math.sqrt(self.d) / rms_norm), y

    def build(self) -> tuple[Tensor, Tensor]:
        pool, pool_labels = self._image_pool()
        g = torch.Generator().manual_seed(self.seed)
        per_class = [torch.nonzero(pool_labels == c).flatten() for c in (0, 1)]
        per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
        counts = (self.n_train // 2, self.n_train - self.n_train // 2)
        if any(c > len(idx) for c, idx in zip(counts, per_class, strict=True)):
            raise ConfigError(f"data.n_train={self.n_train} needs {counts} images per class; the source has "
                              f"{[len(idx) for idx in per_class]}")
        y_train = self.balanced_labels(self.n_train, g)
        train_idx = torch.empty(self.n_train, dtype=torch.long)
        for c in (0, 1):
            train_idx[y_train == c] = per_class[c][: counts[c]]
        rest = torch.cat([idx[n:] for idx, n in zip(per_class, counts, strict=True)])
        if self.n_val > len(rest):
            raise ConfigError(f"data.n_val={self.n_val} exceeds the {len(rest)} images left after training")
        test_idx = rest[torch.randperm(len(rest), generator=g)[: self.n_val]]
        idx = torch.cat([train_idx, test_idx])
        noise = self.sigma_xi * torch.randn(len(idx), self.d, generator=g, dtype=torch.float64)
        return torch.stack([pool[idx], noise], dim=1).float(), pool_labels[idx].long()

    def signal_vectors(self) -> Tensor:
        """``[2, d]``: the mean signal patch (scaled image) of each class in the training set."""
        x, y = self.signal_patches(), self.train_labels()
        return torch.stack([x[y == c].mean(0) for c in (0, 1)])

    def describe(self) -> dict:
        return {**super().describe(), "d": self.d, "snr": self.snr, "n_snr2": self.n_snr2, "sigma_xi": self.sigma_xi,
                "image_shape": list(self.image_shape), "images": type(self.images).__name__}
