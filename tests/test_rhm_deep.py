"""The deep-RHM configuration (``configs/hierarchy/rhm_deep.yaml``, trained on a GPU by
``benchmarks/hierarchy_learned.py``) and what it is built from: ``TreeUNet`` and ``CategoricalDiffusionModule``."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch

from diffuse_feat.backbones import TreeUNet
from diffuse_feat.data.rhm import RHMDataModule
from diffuse_feat.errors import ConfigError
from diffuse_feat.modules import CategoricalDiffusionModule
from diffuse_feat.preconditioning import EDMPreconditioning

REPO = Path(__file__).resolve().parent.parent


def test_tree_unet_level_l_sees_exactly_the_subtree_of_its_node():
    """Changing leaf 5 of a 16-leaf string changes, at every encoder level, only the node above leaf 5."""
    torch.manual_seed(0)
    net = TreeUNet((4, 16), (4, 16), width=16).eval()
    x = torch.randn(1, 4, 16)
    y = x.clone()
    y[0, :, 5] += 1.0
    sigma = torch.ones(1)
    for level, (a, b) in enumerate(zip(net.hidden_features(x, sigma), net.hidden_features(y, sigma), strict=True)):
        changed = ((a - b).abs().amax(1) > 0)[0].nonzero().flatten().tolist()
        assert changed == [5 // 2**level], level


def test_tree_unet_classifier_and_shape_errors():
    net = TreeUNet((8, 32), (5,), width=16)
    assert net(torch.randn(3, 8, 32), torch.ones(3)).shape == (3, 5)
    with pytest.raises(ValueError, match="not divisible"):
        TreeUNet((8, 24), (8, 24), levels=4)
    with pytest.raises(ValueError, match=r"\(channels, length\)"):
        TreeUNet((1, 8, 8), (1, 8, 8))


def small_categorical(dm: RHMDataModule) -> CategoricalDiffusionModule:
    torch.manual_seed(0)
    return CategoricalDiffusionModule(functools.partial(TreeUNet, width=16), data_shape=dm.data_shape,
                                      preconditioning=EDMPreconditioning(dm.data_std),
                                      encoding_scale=dm.scale, encoding_center=dm.center)


def test_categorical_denoiser_is_a_posterior_mean_and_its_loss_is_the_cross_entropy():
    dm = RHMDataModule(v=4, n_c=4, m=2, s=2, L=3, scale=1.5, pool_size=64, n_val=0)
    model = small_categorical(dm).eval()
    x0 = dm.train_tensor()[:6]
    sigma = torch.full((6,), 0.7)
    x = x0 + sigma[:, None, None] * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    d = model(x, sigma)
    probs = d / dm.scale + 1.0 / dm.v  # each position is a probability vector over the v symbols
    assert torch.allclose(probs.sum(1), torch.ones(6, 8), atol=1e-6) and bool((probs >= 0).all())
    logits = model.denoiser.logits(x, sigma)
    expected = torch.nn.functional.cross_entropy(logits, x0.argmax(1), reduction="none").mean(1)
    noise = (x - x0) / sigma[:, None, None]
    torch.testing.assert_close(model.loss.per_sample_loss(model.denoiser, x0, sigma, noise), expected)
    assert torch.equal(model.encode(x0.argmax(1)), x0)


def test_categorical_module_refuses_data_encoded_otherwise(tmp_path, monkeypatch):
    from diffuse_feat.cli import DiffuseFeatCLI

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="encoding_scale"):
        DiffuseFeatCLI(args=["fit", "--config", str(REPO / "configs/hierarchy/rhm_deep.yaml"),
                             "--data.init_args.scale=2.0", *SHRINK])


# The deep configuration as it is, shrunk only in length: steps, pool of trees, batch, probes.
SHRINK = ["--trainer.max_steps=3", "--data.init_args.pool_size=300", "--data.init_args.n_val=40",
          "--data.init_args.batch_size=16", "--trainer.callbacks.init_args.num_probes=8",
          "--trainer.callbacks.init_args.num_steps=4",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_deep_rhm_config_trains_and_is_measured_against_bp(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import hierarchy_learned

    out = tmp_path / "results"
    payload = hierarchy_learned.main(["--probes", "8", "--samples", "8", "--sampler-steps", "4", "--out", str(out),
                                      "--max-minutes", "5", "--", *SHRINK])
    device = "gpu" if torch.cuda.is_available() else "cpu"  # the file names the device it ran on
    saved = json.loads((out / f"hierarchy_learned_{device}.json").read_text())
    assert (out / f"hierarchy_learned_{device}.png").stat().st_size > 0
    assert saved["eval_device"].startswith("cuda" if torch.cuda.is_available() else "cpu")  # where it trained
    assert saved["L"] == 6 and saved["L"] >= 6 and saved["train_steps"] == 3 and saved["n_train"] == 260
    for key in ("v", "m", "s", "n_train", "grammatical_fraction", "sigma", "max_abs_diff_p_class", "device"):
        assert key in saved
    assert len(saved["model"]["p_class"]) == len(saved["bp"]["p_class"]) == len(saved["sigma"])
    assert len(saved["bp"]["p_unchanged"][0]) == 7  # root, five latent levels, leaves
    # BP at the smallest noise keeps every class; the maximum difference is the maximum of the listed ones
    assert saved["bp"]["p_class"][0] > 0.99
    assert saved["max_abs_diff_p_class"] == pytest.approx(max(saved["abs_diff_p_class"]))
    assert payload["grammatical_fraction"] == saved["grammatical_fraction"]
