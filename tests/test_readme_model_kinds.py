"""The README's "EDM networks, learned-variance U-Nets, k-diffusion denoisers" blocks, run as written on tiny models
built here: an EDM-interface network pickled under the README's file name, a learned-variance diffusers folder, and a
guided-diffusion-style network (``model``, ``diffusion`` as ``create_model_and_diffusion`` would give them)."""

from __future__ import annotations

import pickle
import re
import types
from pathlib import Path

import pytest
import torch

from .edm_like import TinyEDMPrecond

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def block(name: str) -> str:
    return re.search(rf"<!-- test-model-kinds-{name} -->\n```python\n(.*?)```", README, flags=re.S).group(1)


def test_the_edm_block_samples_a_pickled_class_conditional_network(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = TinyEDMPrecond(img_resolution=8, img_channels=3, label_dim=10)
    with open(tmp_path / "edm-cifar10-32x32-cond-vp.pkl", "wb") as f:
        pickle.dump({"ema": net}, f)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block("edm"), "README.md", "exec"), namespace)
    images, D = namespace["images"], namespace["D"]
    assert images.shape == (4, 3, 8, 8) and torch.isfinite(images).all()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the label is the README's class 3
        torch.testing.assert_close(D(x, 1.0), net(x, torch.ones(2), torch.eye(10)[[3, 3]]), rtol=0, atol=0)


def test_the_diffusers_block_reads_a_learned_variance_unet_through_its_eps_half(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    from .test_diffusers import TINY_UNET

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**{**TINY_UNET, "in_channels": 3, "out_channels": 6}).eval()
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range", clip_sample=False)
    unet.save_pretrained(tmp_path / "my_iddpm" / "unet")
    scheduler.save_pretrained(tmp_path / "my_iddpm" / "scheduler")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block("diffusers"), "README.md", "exec"), namespace)
    x, sigma, x0_hat = namespace["x"], namespace["sigma"], namespace["x0_hat"]
    assert x0_hat.shape == (2, 3, 8, 8)
    with torch.no_grad():  # the same estimate from the bare U-Net's first three channels, at sigma = 0.5 and 2
        D = namespace["D"]
        t, scale = D.process.time_and_scale(sigma.double())
        eps = unet(scale.float()[:, None, None, None] * x, t.float()).sample[:, :3]
        torch.testing.assert_close(x0_hat, x - sigma[:, None, None, None] * eps, rtol=1e-5, atol=1e-5)


def test_the_k_diffusion_block_samples_a_guided_diffusion_style_model():
    pytest.importorskip("k_diffusion", reason="k-diffusion is not installed: pip install -e '.[kdiffusion]'")
    from diffuse_feat.denoisers.adapters import make_process

    from .test_diffusers_kinds import GuidedDiffusionLike

    torch.manual_seed(0)
    alphas_cumprod = make_process("ddpm").log_alpha_bar.exp().numpy()
    namespace = {"model": GuidedDiffusionLike(3), "diffusion": types.SimpleNamespace(alphas_cumprod=alphas_cumprod)}
    exec(compile(block("k-diffusion"), "README.md", "exec"), namespace)
    samples, D = namespace["samples"], namespace["D"]
    assert samples.shape == (2, 3, 64, 64) and torch.isfinite(samples).all()
    assert D.sigma_min == pytest.approx(0.0100013, rel=1e-5) and D.sigma_max == pytest.approx(157.4, rel=1e-3)
