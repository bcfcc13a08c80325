"""Image DataModules read from a local folder: MNIST, Fashion-MNIST, CIFAR-10 and any ImageFolder.

Each loads its training split once into memory as float32 in [-1, 1] (CIFAR-10's 50k images take
~600 MB), so the ground-truth contract of :class:`TensorDataModule` (training tensor, moments, exact
denoisers) works unchanged. ``data_shape`` and ``num_classes`` are known right after ``__init__``
without reading any file, because the CLI links them into the model before ``setup`` runs. Missing
files stop ``setup`` with one sentence naming the folder and the fix; nothing is downloaded unless
``download=True``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataNotFoundError
from .base import TensorDataModule
from .classes import checked_classes, keep_classes

__all__ = ["MNISTDataModule", "FashionMNISTDataModule", "CIFAR10DataModule", "ImageFolderDataModule"]

_DOWNLOAD_FIX = (
    "download them once with `--data.init_args.download=true` on a machine with internet (or copy them there)"
)


def _to_unit_range(images: Tensor) -> Tensor:
    """uint8 pixels in [0, 255] to float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0


class _LabeledImageDataModule(TensorDataModule):
    """Shared by all image sets: reads uint8 images, keeps ``classes`` (relabelled 0..k-1 in the order
    given), converts to [-1, 1]. Subclasses implement :meth:`read_images`."""

    num_labels: int | None = 10  # labels in the full dataset; None when only the files know it

    def __init__(
        self,
        root: str,
        data_shape: tuple[int, int, int],
        classes: list[int] | None,
        batch_size: int,
        n_train: int | None,
        n_val: int,
        seed: int,
        num_workers: int,
    ):
        super().__init__(batch_size, n_train, n_val, seed, num_workers)
        self.root = root
        self.classes = checked_classes(classes, self.num_labels, type(self).__name__)
        self.data_shape = data_shape
        self.num_classes = len(self.classes) if self.classes is not None else (self.num_labels or 0)

    def read_images(self) -> tuple[Tensor, Tensor]:
        """Return the training split as ``(uint8 [N, C, H, W], long [N])``."""
        raise NotImplementedError

    def build(self) -> tuple[Tensor, Tensor]:
        images, labels = keep_classes(*self.read_images(), self.classes)
        return _to_unit_range(images), labels.long()


class _DownloadableDataModule(_LabeledImageDataModule):
    """A torchvision dataset whose training files live in ``<root>/<subfolder>``; subclasses only say which.

    Args:
        root: the folder holding ``<subfolder>``; download: fetch the files there first if missing (needs internet).
        classes: keep only these labels (relabelled 0..k-1 in the order given); batch_size, n_train, n_val, seed,
            num_workers: as in :class:`~diffuse_feat.data.base.TensorDataModule`.
    """

    display_name: str  # for messages
    torchvision_name: str  # class in torchvision.datasets that knows how to download it
    subfolder: str
    file_names: tuple[str, ...]
    image_shape: tuple[int, int, int]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        classes: list[int] | None = None,
        batch_size: int = 128,
        n_train: int | None = None,
        n_val: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(root, self.image_shape, classes, batch_size, n_train, n_val, seed, num_workers)
        self.download = download

    @property
    def folder(self) -> Path:
        return Path(self.root).absolute() / self.subfolder

    def _files_present(self) -> bool:
        return all((self.folder / name).is_file() for name in self.file_names)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node before `setup`, so DDP ranks never download twice
        if self.download and not self._files_present():
            import torchvision.datasets

            try:
                getattr(torchvision.datasets, self.torchvision_name)(self.root, train=True, download=True)
            except (RuntimeError, OSError) as err:  # offline or unreachable: torchvision nests urllib's errors
                reason = re.search(r"<urlopen error (?:\[[^\]]*\] )?([^>]*)>", str(err))
                why = reason.group(1) if reason else str(err).strip().splitlines()[-1]
                raise DataNotFoundError(
                    f"data.download: could not download {self.display_name} into '{self.folder}' ({why}); on a machine "
                    f"without internet copy the files {', '.join(self.file_names[:2])}, ... there from one that has "
                    "it, and run without --data.init_args.download=true"
                ) from None

    def read_images(self) -> tuple[Tensor, Tensor]:
        self.prepare_data()  # a no-op unless download=True and the files are missing (use without a Trainer)
        if not self._files_present():
            missing = f"{self.display_name} files not found under '{self.folder}'"
            raise DataNotFoundError(f"{missing}; {_DOWNLOAD_FIX}.")
        return self.read_files()

    def read_files(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class MNISTDataModule(_DownloadableDataModule):
    """MNIST training split (60k, 1x28x28) from ``<root>/MNIST/raw/train-{images-idx3,labels-idx1}-ubyte``,
    the layout torchvision's downloader writes."""

    display_name, torchvision_name, subfolder = "MNIST", "MNIST", "MNIST/raw"
    file_names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    image_shape = (1, 28, 28)

    def read_files(self) -> tuple[Tensor, Tensor]:
        from torchvision.datasets.mnist import read_image_file, read_label_file

        images = read_image_file(str(self.folder / self.file_names[0]))
        return images.unsqueeze(1), read_label_file(str(self.folder / self.file_names[1]))


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST training split (60k, 1x28x28) from ``<root>/FashionMNIST/raw`` (MNIST's file format)."""

    display_name, torchvision_name, subfolder = "Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw"


class CIFAR10DataModule(_DownloadableDataModule):
    """CIFAR-10 training split (50k, 3x32x32) from ``<root>/cifar-10-batches-py/data_batch_{1..5}``,
    the python version that torchvision downloads."""

    display_name, torchvision_name, subfolder = "CIFAR-10", "CIFAR10", "cifar-10-batches-py"
    file_names = tuple(f"data_batch_{i}" for i in range(1, 6))
    image_shape = (3, 32, 32)

    def read_files(self) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        for name in self.file_names:
            with open(self.folder / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")  # the official format is a pickled dict
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch["labels"])
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


class ImageFolderDataModule(_LabeledImageDataModule):
    """Any folder with one subfolder of images per class (torchvision ``ImageFolder`` layout); labels
    follow the sorted subfolder names. Images are resized (shorter side) and center-cropped to
    ``image_size``, and converted to ``channels`` = 1 (grayscale) or 3 (RGB)."""

    num_labels = None

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        channels: int = 3,
        classes: list[int] | None = None,
        batch_size: int = 128,
        n_train: int | None = None,
        n_val: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ):
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if image_size < 1:
            raise ConfigError(f"data.image_size must be >= 1, got {image_size}")
        shape = (channels, image_size, image_size)
        super().__init__(root, shape, classes, batch_size, n_train, n_val, seed, num_workers)
        if self.classes is None:
            # listing subfolder names is cheap and lets the CLI link num_classes before setup
            self.num_classes = len(self._class_folders())
            if self.num_classes == 0:  # stop here: a classifier built on 0 classes would hide the real cause
                self.read_images()

    def _class_folders(self) -> list[str]:
        root = Path(self.root)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def read_images(self) -> tuple[Tensor, Tensor]:
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        class_folders = self._class_folders()
        if not class_folders:
            raise DataNotFoundError(
                f"no class subfolders found under '{Path(self.root).absolute()}'; point "
                "`--data.init_args.root` at a folder holding one subfolder of images per class "
                "(ImageFolderDataModule has no download)."
            )
        if self.classes is not None and max(self.classes) >= len(class_folders):
            found = f"'{Path(self.root).absolute()}' has {len(class_folders)} class folders"
            raise ConfigError(f"data.classes={self.classes} asks for more labels than {found}")
        channels, size = self.data_shape[0], self.data_shape[1]
        # ImageFolder's loader already gives RGB; grayscale needs an explicit conversion
        steps = [transforms.Grayscale(num_output_channels=1)] if channels == 1 else []
        steps += [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
        dataset = ImageFolder(self.root, transform=transforms.Compose(steps))
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        return images, torch.tensor(dataset.targets, dtype=torch.long)
