"""``compile_backbone``: training through torch.compile gives the weights eager training gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from diffuse_feat.cli import DiffuseFeatCLI

REPO = Path(__file__).resolve().parent.parent
STEPS = [
    "fit", "--config", str(REPO / "configs/default.yaml"),
    "--data.init_args.n_train=256", "--data.init_args.batch_size=64",
    "--model.init_args.backbone.init_args.width=32", "--model.init_args.backbone.init_args.depth=1",
    "--trainer.max_steps=6", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--trainer.enable_checkpointing=false",
    # fp32 on every device: the comparison is compiled vs eager, not bf16 rounding (a GPU picks bf16-mixed)
    "--trainer.precision=32-true",
]


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor needs a C++ compiler")
def test_inductor_compiled_training_matches_eager(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eager = DiffuseFeatCLI(args=STEPS).model
    compiled = DiffuseFeatCLI(args=[*STEPS, "--model.init_args.compile_backbone=true"]).model
    assert compiled.denoiser.backbone_call.compiled is not None  # the training steps really went through torch.compile
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_auto_compiles_only_when_training_on_a_gpu(device):
    import functools

    from diffuse_feat.backbones import MLP
    from diffuse_feat.modules import DiffusionModule

    model = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 4, 4),
                            compile_backbone="auto").to(device)
    x, sigma = torch.randn(2, 1, 4, 4, device=device), torch.ones(2, device=device)
    model.eval()
    model.denoiser(x, sigma)
    assert model.denoiser.backbone_call.compiled is None  # evaluation is always eager
    model.train()
    model.denoiser(x, sigma)
    assert (model.denoiser.backbone_call.compiled is not None) == (device == "cuda")
