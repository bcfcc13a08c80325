"""Image DataModules on tiny fake datasets written in the real on-disk formats."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse_feat.data.images import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

N_FAKE = 30  # three images per label


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The big-endian IDX format of the MNIST files: zero, zero, dtype code 0x08 (uint8), ndim, dims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_images(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0..9 cycling; each image is 20 * label everywhere except a black and a white pixel, so
    the label can be read back from the pixels and the [-1, 1] range is hit exactly."""
    labels = np.arange(N_FAKE) % 10
    images = np.broadcast_to((20 * labels).reshape(-1, *[1] * len(shape)), (N_FAKE, *shape)).copy()
    images.reshape(N_FAKE, -1)[:, 1] = 0
    images.reshape(N_FAKE, -1)[:, 2] = 255
    return images.astype(np.uint8), labels


def _label_from_pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x.flatten(1)[:, 0] + 1) * 127.5 / 20).long()


def _write_fake_mnist(root: Path, folder: str = "MNIST") -> None:
    images, labels = _fake_images((28, 28))
    _write_idx(root / folder / "raw" / "train-images-idx3-ubyte", images)
    _write_idx(root / folder / "raw" / "train-labels-idx1-ubyte", labels)


def test_mnist_reads_raw_idx_files(tmp_path):
    _write_fake_mnist(tmp_path)
    dm = MNISTDataModule(root=str(tmp_path), batch_size=8)
    assert dm.data_shape == (1, 28, 28) and dm.num_classes == 10  # known before any file is read
    dm.setup("fit")
    x, y = dm.train_tensor(), dm.train_labels()
    assert x.shape == (N_FAKE, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(_label_from_pixels(x), y)
    batch_x, batch_y = next(iter(dm.train_dataloader()))
    assert batch_x.shape == (8, 1, 28, 28) and batch_y.shape == (8,)


def test_classes_keeps_and_relabels_in_the_order_given(tmp_path):
    _write_fake_mnist(tmp_path)
    dm = MNISTDataModule(root=str(tmp_path), classes=[7, 3])
    assert dm.num_classes == 2
    x, y = dm.train_tensor(), dm.train_labels()
    assert x.shape[0] == 6 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    original = _label_from_pixels(x)
    assert original[y == 0].tolist() == [7, 7, 7] and original[y == 1].tolist() == [3, 3, 3]


def test_n_train_and_n_val_split_the_pool(tmp_path):
    _write_fake_mnist(tmp_path, "FashionMNIST")
    dm = FashionMNISTDataModule(root=str(tmp_path), n_train=5, n_val=4, seed=3)
    assert dm.train_tensor().shape[0] == 5 and dm.val_tensor().shape[0] == 4


def test_bad_classes_fail_at_construction():
    with pytest.raises(ValueError, match="0..9"):
        MNISTDataModule(classes=[3, 10])
    with pytest.raises(ValueError, match="distinct"):
        CIFAR10DataModule(classes=[1, 1])


@pytest.mark.parametrize(
    ("datamodule", "folder"),
    [
        (MNISTDataModule, "MNIST/raw"),
        (FashionMNISTDataModule, "FashionMNIST/raw"),
        (CIFAR10DataModule, "cifar-10-batches-py"),
    ],
)
def test_missing_files_name_the_folder_and_the_download_flag(tmp_path, datamodule, folder):
    dm = datamodule(root=str(tmp_path / "nowhere"))  # constructing must not touch files
    with pytest.raises(FileNotFoundError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / folder) in message and "--data.init_args.download=true" in message


def test_cifar10_reads_python_batches(tmp_path):
    images, labels = _fake_images((3, 32, 32))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(5):  # six images per batch file, stored as rows of 3072 bytes (R plane, G plane, B plane)
        rows = slice(6 * i, 6 * i + 6)
        batch = {"data": images[rows].reshape(6, 3072), "labels": labels[rows].tolist()}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
    dm = CIFAR10DataModule(root=str(tmp_path), classes=[0, 1])
    x, y = dm.train_tensor(), dm.train_labels()
    assert x.shape == (6, 3, 32, 32) and dm.data_shape == (3, 32, 32) and dm.num_classes == 2
    assert torch.equal(_label_from_pixels(x), y)  # labels 0 and 1 kept as 0 and 1
    assert x[0, 0, 0, 2] == 1 and x[0, 0, 0, 1] == -1  # pixel order survives the reshape


def _write_png_folder(root: Path) -> None:
    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for name, color in colors.items():
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (12, 10), color).save(root / name / f"{i}.png")


def test_image_folder_resizes_crops_and_labels_by_subfolder(tmp_path):
    _write_png_folder(tmp_path / "pets")
    rgb = ImageFolderDataModule(root=str(tmp_path / "pets"), image_size=8, channels=3)
    assert rgb.num_classes == 2 and rgb.data_shape == (3, 8, 8)
    x, y = rgb.train_tensor(), rgb.train_labels()
    assert x.shape == (4, 3, 8, 8) and y.tolist() == [0, 0, 1, 1]  # cat = 0, dog = 1 (sorted names)
    assert torch.equal(x[0, :, 3, 3], torch.tensor([1.0, -1.0, -1.0]))  # red
    assert torch.equal(x[3, :, 3, 3], torch.tensor([-1.0, -1.0, 1.0]))  # blue

    gray = ImageFolderDataModule(root=str(tmp_path / "pets"), image_size=6, channels=1, classes=[1])
    x = gray.train_tensor()
    assert x.shape == (2, 1, 6, 6) and gray.num_classes == 1 and gray.train_labels().tolist() == [0, 0]


def test_image_folder_missing_names_the_folder_and_the_root_flag(tmp_path):
    # without explicit classes the class count comes from the folder, so a missing folder stops at once
    with pytest.raises(FileNotFoundError) as error:
        ImageFolderDataModule(root=str(tmp_path / "absent"), image_size=8)
    assert str(tmp_path / "absent") in str(error.value) and "--data.init_args.root" in str(error.value)
    dm = ImageFolderDataModule(root=str(tmp_path / "absent"), image_size=8, classes=[0, 1])
    assert dm.num_classes == 2 and dm.data_shape == (3, 8, 8)
    with pytest.raises(FileNotFoundError, match="--data.init_args.root"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="must be 1 .grayscale. or 3"):
        ImageFolderDataModule(root=str(tmp_path), channels=2)
