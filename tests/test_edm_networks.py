"""EDM's networks as framework denoisers: ``from_edm`` on networks of EDM's interface built here, ``load_edm`` on their
pickles, ``--denoiser edm:PATH``, and the sentence when EDM's code is not importable."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest
import torch

from diffuse_feat.analyze.denoiser_spec import resolve_denoiser
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.errors import ConfigError, ShapeError, SigmaError
from diffuse_feat.interop.edm import from_edm, load_edm
from diffuse_feat.process import SigmaOutOfRangeError
from diffuse_feat.samplers import generate, sample_heun

from .edm_like import TinyDiscretePrecond, TinyEDMPrecond


def test_from_edm_is_the_networks_own_output_with_its_shape_and_range():
    torch.manual_seed(0)
    net = TinyEDMPrecond()
    D = from_edm(net)
    assert D.data_shape == (1, 8, 8) and (D.sigma_min, D.sigma_max) == (0.0, float("inf")) and not D.training
    x, sigma = torch.randn(5, 1, 8, 8), torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0])
    with torch.no_grad():
        torch.testing.assert_close(D(x, sigma), net(x, sigma), rtol=0, atol=0)
        torch.testing.assert_close(D(x, 0.5), net(x, torch.full((5,), 0.5)), rtol=0, atol=0)


def test_a_class_conditional_network_is_told_the_fixed_label():
    torch.manual_seed(0)
    net = TinyEDMPrecond(label_dim=10)
    x, sigma = torch.randn(3, 1, 8, 8), torch.full((3,), 2.0)
    with torch.no_grad():
        ours = from_edm(net, class_labels=7)(x, sigma)
        theirs = net(x, sigma, torch.nn.functional.one_hot(torch.full((3,), 7), 10).float())
        other = from_edm(net, class_labels=2)(x, sigma)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert not torch.allclose(ours, other)  # the label reaches the network
    with pytest.raises(ConfigError, match=r"class-conditional \(label_dim 10\); pass class_labels="):
        from_edm(net)
    with pytest.raises(ConfigError, match="give one in 0..9"):
        from_edm(net, class_labels=10)
    with pytest.raises(ConfigError, match="unconditional"):
        from_edm(TinyEDMPrecond(), class_labels=1)


def test_a_discrete_network_refuses_sigma_outside_its_table_and_generate_uses_its_rounded_range():
    torch.manual_seed(0)
    net = TinyDiscretePrecond()
    D = from_edm(net)
    assert (D.sigma_min, D.sigma_max) == pytest.approx((0.02, 50.0), rel=1e-6)
    with pytest.raises(SigmaOutOfRangeError, match="outside the range 0.02 to 50"):
        D(torch.zeros(1, 1, 8, 8), 0.002)
    seen = []

    def hook(step):
        seen.append(step["sigma"])

    samples = generate(D, (1, 8, 8), [0, 1], num_steps=6, hook=hook)  # EDM's defaults would start at 80, end 0.002
    assert samples.shape == (2, 1, 8, 8) and torch.isfinite(samples).all()
    table = net.u.double()
    assert seen[0] == pytest.approx(50.0, rel=1e-6)
    assert all(torch.isclose(table, torch.tensor(s, dtype=torch.float64), rtol=1e-6).any() for s in seen)


def test_input_checks_are_one_sentence_each():
    D = from_edm(TinyEDMPrecond())
    x = torch.zeros(2, 1, 8, 8)
    for sigma, pattern in [(float("nan"), "finite and >= 0"), (-1.0, "finite and >= 0"),
                           (torch.tensor([1.0, float("nan")]), "finite and >= 0"),
                           (torch.tensor([1.0, 2.0, 3.0]), "3 values but the batch has 2")]:
        with pytest.raises(SigmaError, match=pattern) as err:
            D(x, sigma)
        assert "\n" not in str(err.value)
    with pytest.raises(ShapeError, match="got samples of 3 channels where it takes 1"):
        D(torch.zeros(2, 3, 8, 8), 1.0)


def test_a_pickle_loads_and_drives_the_samplers(tmp_path):
    torch.manual_seed(0)
    net = TinyEDMPrecond()
    with open(tmp_path / "network-snapshot.pkl", "wb") as f:
        pickle.dump({"ema": net, "dataset_kwargs": {}}, f)
    D = load_edm(tmp_path / "network-snapshot.pkl")
    x = torch.randn(2, 1, 8, 8) * 5
    grid = torch.tensor([5.0, 1.0, 0.2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(sample_heun(D, x, grid), sample_heun(from_edm(net), x, grid), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="holds no network under 'net'"):
        load_edm(tmp_path / "network-snapshot.pkl", key="net")


def test_without_edms_code_on_the_path_the_pickle_says_what_to_add(tmp_path, monkeypatch):
    # a pickle whose class lives in a module called torch_utils, as EDM's persistent classes do
    package = tmp_path / "edm_code" / "torch_utils"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "persistence.py").write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            sigma_min, sigma_max = 0.0, float("inf")
            def forward(self, x, sigma, class_labels=None):
                return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
            def round_sigma(self, sigma):
                return torch.as_tensor(sigma)
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "edm_code"))
    from torch_utils.persistence import Net  # noqa: PLC0415

    with open(tmp_path / "snapshot.pkl", "wb") as f:
        pickle.dump({"ema": Net()}, f)
    assert load_edm(tmp_path / "snapshot.pkl")(torch.ones(1, 1, 2, 2), 1.0).mean() == 0.5
    monkeypatch.delitem(sys.modules, "torch_utils")
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "edm_code")])
    with pytest.raises(ConfigError, match=r"needs EDM's code \(its torch_utils and dnnlib\) to load: put a checkout "
                                          r"of the code that wrote it \(github.com/NVlabs/edm or edm2\) on PYTHONPATH"):
        load_edm(tmp_path / "snapshot.pkl")


def test_the_edm_spec_of_analyze_reads_the_pickle_and_checks_it_against_the_data(tmp_path):
    torch.manual_seed(0)
    with open(tmp_path / "net.pkl", "wb") as f:
        pickle.dump({"ema": TinyEDMPrecond(img_resolution=8)}, f)
    D, info = resolve_denoiser(f"edm:{tmp_path / 'net.pkl'}", DigitsDataModule())
    assert info["kind"] == "edm" and info["data_shape"] == [1, 8, 8] and info["sigma_max"] == float("inf")
    with open(tmp_path / "wide.pkl", "wb") as f:
        pickle.dump({"ema": TinyEDMPrecond(img_resolution=16)}, f)
    with pytest.raises(ShapeError, match=r"takes samples of shape \[1, 16, 16\] but --data gives"):
        resolve_denoiser(f"edm:{tmp_path / 'wide.pkl'}", DigitsDataModule())
