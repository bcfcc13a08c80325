"""In-memory DataModules.

A :class:`TensorDataModule` holds its training and validation tensors in memory (every dataset the
papers study fits) and offers what it knows about them: the training tensor and labels, the
empirical mean and covariance (eigendecomposition cached), the exact Gaussian and empirical
denoisers (the capabilities ``TrainingSet`` and ``GaussianReference``), and whatever else a subclass
declares (:mod:`diffuse_feat.capabilities` lists them all).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..capabilities import GaussianReference, TrainingSet
from ..denoisers import EmpiricalDenoiser, GaussianDenoiser
from ..errors import ConfigError

__all__ = ["TensorDataModule", "TensorBatches", "tensor_loader", "EpochSeededSampler", "ResumableLoader"]


class EpochSeededSampler(Sampler[int]):
    """Random permutations of ``range(num_samples)`` laid end to end, ``length`` indices per epoch (default: one
    permutation), that depend only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a checkpoint sees the
    same data order as an uninterrupted one (a generator carried across epochs would not). A ``length`` of
    several permutations makes one epoch a fixed number of steps whatever the training-set size (full-batch
    gradient descent, tiny training sets), so Lightning's per-epoch cost does not dominate.
    """

    def __init__(self, num_samples: int, seed: int = 0, length: int | None = None):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0
        self.length = num_samples if length is None else length
        self.skip = 0  # indices the next iteration leaves out from the start (a resume mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        count = -(-self.length // self.num_samples)  # permutations needed to cover ``length``
        permutations = [torch.randperm(self.num_samples, generator=g) for _ in range(count)]
        skip, self.skip = self.skip, 0
        return iter(torch.cat(permutations)[skip : self.length].tolist())

    def __len__(self) -> int:
        return self.length


class TensorBatches(Dataset):
    """Like ``TensorDataset`` but a whole batch is one indexing call (``__getitems__``), not one call per
    sample plus a collate: for in-memory data this is most of the data-loading cost on CPU."""

    def __init__(self, *tensors: Tensor):
        if len({t.shape[0] for t in tensors}) != 1:
            raise ValueError("all tensors need the same first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        idx = torch.as_tensor(indices)
        return [t[idx] for t in self.tensors]

    @staticmethod
    def collate(batch: list[Tensor]) -> list[Tensor]:
        return batch


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSeededSampler` that a checkpoint written mid-epoch resumes exactly.

    Lightning saves ``state_dict()`` of a training loader that has one and hands it back to ``load_state_dict`` on
    resume; without it the resumed epoch restarts its data order and the weights drift from an uninterrupted run's.
    The state is the epoch and the batches of it already handed out (Lightning does not fetch ahead from a loader
    of known length); the resumed iteration of that same epoch leaves them out. Under DDP Lightning puts a
    ``DistributedSampler`` around the sampler and every rank has served the same number of batches of its own shard
    (the shards are a function of the epoch), so each rank skips that many of its batches: the same exact
    continuation on several processes (tests/test_distributed.py).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch, self._served = 0, 0
        self._resume: dict[str, int] | None = None

    def __iter__(self):
        # a generator: it starts at the first batch, after Lightning has called the sampler's set_epoch
        sampler = self.sampler
        epoch = int(getattr(sampler, "epoch", 0))
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        skip = skip if 0 < skip < len(self) else 0
        self._epoch, self._served = epoch, skip
        if isinstance(sampler, EpochSeededSampler):  # one process: the sampler leaves the served indices out
            sampler.skip = skip * self.batch_size  # whole batches: only the last one may be short
            batches = super().__iter__()
        else:  # Lightning's DistributedSampler around ours (DDP): each rank served `skip` batches of its own shard
            batches = itertools.islice(super().__iter__(), skip, None)  # in-memory batches: skipping costs ~us each
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


def tensor_loader(tensors: Sequence[Tensor], batch_size: int, sampler: Sampler | None = None,
                  num_workers: int = 0) -> DataLoader:
    """A DataLoader over in-memory tensors yielding ``[x, y, ...]`` batches (optionally in ``sampler`` order);
    resumable mid-epoch when ``sampler`` is an :class:`EpochSeededSampler`."""
    loader = ResumableLoader if isinstance(sampler, EpochSeededSampler) else DataLoader
    return loader(TensorBatches(*tensors), batch_size=batch_size, sampler=sampler, shuffle=False,
                  num_workers=num_workers, collate_fn=TensorBatches.collate, drop_last=False)


class TensorDataModule(pl.LightningDataModule, TrainingSet, GaussianReference):
    """Base for in-memory datasets. Subclasses set ``data_shape``/``num_classes`` in ``__init__``
    and implement :meth:`build` returning the full pool ``(x, y)``; this class splits it into a
    seeded validation set of ``n_val`` and a seeded training subset of ``n_train``.

    Batches are ``(x, y)``; unlabeled data has ``y = -1`` and ``num_classes = 0``.
    """

    def __init__(
        self,
        batch_size: int = 128,
        n_train: int | None = None,
        n_val: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if n_train is not None and n_train < 1:
            raise ConfigError(f"data.n_train must be >= 1 or null (all), got {n_train}")
        if n_val < 0:
            raise ConfigError(f"data.n_val must be >= 0, got {n_val}")
        self.batch_size, self.n_train, self.n_val = batch_size, n_train, n_val
        self.seed, self.num_workers = seed, num_workers
        self.data_shape: tuple[int, ...] = ()
        self.num_classes: int = 0
        self._split: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # ----- subclasses -------------------------------------------------------------------------
    def build(self) -> tuple[Tensor, Tensor]:
        """Return the whole pool ``(x [N, *data_shape] float, y [N] long)``."""
        raise NotImplementedError

    # ----- splitting --------------------------------------------------------------------------
    def _ensure_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self._split is None:
            x, y = self.build()
            if tuple(x.shape[1:]) != tuple(self.data_shape):
                name = type(self).__name__
                raise ValueError(f"{name}.build returned shape {list(x.shape[1:])}, declared {self.data_shape}")
            g = torch.Generator().manual_seed(self.seed)
            perm = torch.randperm(x.shape[0], generator=g)
            if self.n_val >= x.shape[0]:
                raise ConfigError(f"data.n_val={self.n_val} leaves no training data out of {x.shape[0]} points")
            val_idx, pool_idx = perm[: self.n_val], perm[self.n_val :]
            if self.n_train is not None:
                if self.n_train > len(pool_idx):
                    raise ConfigError(
                        f"data.n_train={self.n_train} exceeds the {len(pool_idx)} training points available "
                        f"({x.shape[0]} in total, n_val={self.n_val} held out)"
                    )
                pool_idx = pool_idx[: self.n_train]
            self._split = tuple(t.contiguous() for t in (x[pool_idx], y[pool_idx], x[val_idx], y[val_idx]))
        return self._split

    def setup(self, stage: str | None = None) -> None:
        self._ensure_split()

    # ----- loaders ----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        x, y, _, _ = self._ensure_split()
        sampler = EpochSeededSampler(x.shape[0], self.seed)
        return tensor_loader((x, y), min(self.batch_size, x.shape[0]), sampler, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        """Held-out points, or the training set itself when ``n_val = 0``."""
        x, y, vx, vy = self._ensure_split()
        if vx.shape[0] == 0:
            vx, vy = x, y
        return tensor_loader((vx, vy), min(self.batch_size, vx.shape[0]), None, self.num_workers)

    # ----- ground truth -----------------------------------------------------------------------
    def train_tensor(self) -> Tensor:
        return self._ensure_split()[0]

    def train_labels(self) -> Tensor:
        return self._ensure_split()[1]

    def val_tensor(self) -> Tensor:
        """Held-out points (empty when ``n_val = 0``)."""
        return self._ensure_split()[2]

    def val_labels(self) -> Tensor:
        return self._ensure_split()[3]

    @functools.cached_property
    def _moments(self) -> tuple[Tensor, Tensor]:
        flat = self.train_tensor().reshape(self.train_tensor().shape[0], -1).to(torch.float64)
        mean = flat.mean(0)
        centered = flat - mean
        return mean, centered.T @ centered / flat.shape[0]

    def mean(self) -> Tensor:
        """Empirical training mean, flattened ``[d]`` (float64)."""
        return self._moments[0]

    def covariance(self) -> Tensor:
        """Empirical training covariance ``[d, d]`` normalised by 1/N (float64)."""
        return self._moments[1]

    @functools.cached_property
    def _eigh(self) -> tuple[Tensor, Tensor]:
        lam, u = torch.linalg.eigh(self.covariance())
        order = torch.argsort(lam, descending=True)
        return lam[order].clamp_min(0), u[:, order]

    def covariance_eigh(self) -> tuple[Tensor, Tensor]:
        """``(eigenvalues descending [d], eigenvectors [d, d])`` of :meth:`covariance`, cached."""
        return self._eigh

    def gaussian_denoiser(self) -> GaussianDenoiser:
        """The Wiener filter built from the training mean and covariance."""
        lam, u = self.covariance_eigh()
        return GaussianDenoiser(self.mean(), lam, u, self.data_shape)

    def empirical_denoiser(self, chunk_size: int = 4096) -> EmpiricalDenoiser:
        """The exact denoiser of the training set (memorizes)."""
        return EmpiricalDenoiser(self.train_tensor(), chunk_size=chunk_size)

    def describe(self) -> dict:
        x = self.train_tensor()
        return {"name": type(self).__name__, "n_train": int(x.shape[0]), "data_shape": list(self.data_shape),
                "num_classes": self.num_classes}
