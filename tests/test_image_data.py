"""Image DataModules on tiny fake datasets written in the real on-disk formats."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from diffuse_feat.data.images import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

from .fake_images import N_FAKE, label_from_pixels, write_fake_cifar10, write_fake_mnist


def test_mnist_reads_raw_idx_files(tmp_path):
    write_fake_mnist(tmp_path)
    dm = MNISTDataModule(root=str(tmp_path), batch_size=8)
    assert dm.data_shape == (1, 28, 28) and dm.num_classes == 10  # known before any file is read
    dm.setup("fit")
    x, y = dm.train_tensor(), dm.train_labels()
    assert x.shape == (N_FAKE, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(label_from_pixels(x), y)
    batch_x, batch_y = next(iter(dm.train_dataloader()))
    assert batch_x.shape == (8, 1, 28, 28) and batch_y.shape == (8,)


def test_classes_keeps_and_relabels_in_the_order_given(tmp_path):
    write_fake_mnist(tmp_path)
    dm = MNISTDataModule(root=str(tmp_path), classes=[7, 3])
    assert dm.num_classes == 2
    x, y = dm.train_tensor(), dm.train_labels()
    assert x.shape[0] == 6 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    original = label_from_pixels(x)
    assert original[y == 0].tolist() == [7, 7, 7] and original[y == 1].tolist() == [3, 3, 3]


def test_n_train_and_n_val_split_the_pool(tmp_path):
    write_fake_mnist(tmp_path, "FashionMNIST")
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
    write_fake_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), classes=[0, 1])
    x, y = dm.train_tensor(), dm.train_labels()
    assert x.shape == (6, 3, 32, 32) and dm.data_shape == (3, 32, 32) and dm.num_classes == 2
    assert torch.equal(label_from_pixels(x), y)  # labels 0 and 1 kept as 0 and 1
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
