"""Tiny fake image datasets written in the real on-disk formats (MNIST IDX files, CIFAR-10 pickles),
so the image DataModules and the image configs run offline."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch

N_FAKE = 30  # three images per label


def write_idx(path: Path, array: np.ndarray) -> None:
    """The big-endian IDX format of the MNIST files: zero, zero, dtype code 0x08 (uint8), ndim, dims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_images(shape: tuple[int, ...], n: int = N_FAKE) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0..9 cycling; each image is 20 * label everywhere except a black and a white pixel, so
    the label can be read back from the pixels and the [-1, 1] range is hit exactly."""
    labels = np.arange(n) % 10
    images = np.broadcast_to((20 * labels).reshape(-1, *[1] * len(shape)), (n, *shape)).copy()
    images.reshape(n, -1)[:, 1] = 0
    images.reshape(n, -1)[:, 2] = 255
    return images.astype(np.uint8), labels


def label_from_pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x.flatten(1)[:, 0] + 1) * 127.5 / 20).long()


def write_fake_mnist(root: Path, folder: str = "MNIST", n: int = N_FAKE) -> None:
    images, labels = fake_images((28, 28), n)
    write_idx(root / folder / "raw" / "train-images-idx3-ubyte", images)
    write_idx(root / folder / "raw" / "train-labels-idx1-ubyte", labels)


def write_fake_cifar10(root: Path, n: int = N_FAKE) -> None:
    """Five training batch files of ``n / 5`` images each (six by default; 10,000 for the real size, as the
    benchmarks use), stored as rows of 3072 bytes (R, G, B planes)."""
    images, labels = fake_images((3, 32, 32), n)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_file = n // 5
    for i in range(5):
        rows = slice(per_file * i, per_file * (i + 1))
        batch = {"data": images[rows].reshape(-1, 3072), "labels": labels[rows].tolist()}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
