"""The learned denoiser (``PreconditionedDenoiser``): the closed form of its preconditioning, its fp32 boundary, its
compiled training path, and the ``DiffusionModule`` that holds it (checkpoints written before it existed load)."""

from __future__ import annotations

import copy
import functools
import pickle

import lightning
import pytest
import torch

from diffuse_feat.backbones import MLP
from diffuse_feat.denoisers import CategoricalDenoiser, PreconditionedDenoiser
from diffuse_feat.errors import ConfigError
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.preconditioning import (
    EDMPreconditioning,
    EpsilonPreconditioning,
    NoPreconditioning,
    Preconditioning,
    VEPreconditioning,
)
from diffuse_feat.sigma_sampling import LogNormalSigma


def old_edm_denoiser(backbone, x, sigma, sigma_data=0.5):
    """``DiffusionModule.denoise_unchecked`` with ``EDMPreconditioning``, as it was: ``c_skip x + c_out F(c_in x)``."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    total = s.square() + sigma_data**2
    return sigma_data**2 / total * x + s * sigma_data / total.sqrt() * backbone(total.rsqrt() * x, sigma)


def mlp(shape=(1, 4, 4), out=None, **kwargs):
    torch.manual_seed(0)
    return MLP(shape, out or shape, width=16, depth=1, **kwargs)


# ----- the learned denoiser -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("preconditioning", [EDMPreconditioning(), EDMPreconditioning(0.2), EpsilonPreconditioning(),
                                             VEPreconditioning(), NoPreconditioning()], ids=repr)
def test_preconditioned_denoiser_is_c_skip_x_plus_c_out_f_of_c_in_x(preconditioning: Preconditioning):
    backbone = mlp()
    denoiser = PreconditionedDenoiser(backbone, preconditioning)
    x = torch.randn(5, 1, 4, 4)
    sigma = torch.tensor([0.0, 0.01, 0.7, 3.0, 80.0])
    c_skip, c_out, c_in = (c[:, None, None, None] for c in preconditioning.coefficients(sigma))
    torch.testing.assert_close(denoiser(x, sigma), c_skip * x + c_out * backbone(c_in * x, sigma))
    # one number for the whole batch, and the module that holds it returns the same
    torch.testing.assert_close(denoiser(x, 0.7), denoiser(x, torch.full((5,), 0.7)))
    module = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 4, 4),
                             preconditioning=preconditioning)
    module.backbone.load_state_dict(backbone.state_dict())
    assert torch.equal(module(x, sigma), module.denoiser(x, sigma))
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        denoiser(x, -1.0)
    with pytest.raises(ValueError, match="sigma has 2 values but the batch has 5"):
        denoiser(x, torch.ones(2))


def test_preconditioned_denoiser_output_is_fp32_under_bf16_autocast():
    backbone = mlp()
    seen = {}
    backbone.register_forward_hook(lambda mod, args, out: seen.update(dtype=out.dtype))
    preconditioning = EDMPreconditioning()
    denoiser = PreconditionedDenoiser(backbone, preconditioning)
    x, sigma = torch.randn(4, 1, 4, 4), torch.tensor([0.01, 0.5, 5.0, 80.0])
    c_skip, c_out, c_in = (c[:, None, None, None] for c in preconditioning.coefficients(sigma))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = denoiser(x, sigma)
        raw = backbone(c_in * x, sigma)
    assert seen["dtype"] == raw.dtype == torch.bfloat16 and out.dtype == torch.float32
    # only F ran in bf16: coefficients, skip connection and output are fp32 (at sigma = 0.01, D ~ x to 1e-2)
    assert torch.equal(out, c_skip * x + c_out * raw.float())
    torch.testing.assert_close(out, denoiser(x, sigma), rtol=0.05, atol=0.02)
    categorical = CategoricalDenoiser(mlp((1, 16)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert categorical.logits(x.reshape(4, 1, 16), sigma).dtype == torch.float32


def test_compiled_backbone_trains_only_in_training_mode_and_never_enters_state_dict_or_copies():
    backbone = mlp()
    denoiser = PreconditionedDenoiser(backbone, compile_backbone="eager")  # a torch.compile backend, no C++ needed
    x, sigma = torch.randn(3, 1, 4, 4), torch.ones(3)
    denoiser.eval()
    eager = denoiser(x, sigma)
    assert denoiser.backbone_call.compiled is None  # evaluation is always eager
    denoiser.train()
    torch.testing.assert_close(denoiser(x, sigma), eager)
    assert denoiser.backbone_call.compiled is not None
    assert set(denoiser.state_dict()) == {f"backbone.{k}" for k in backbone.state_dict()}
    assert copy.deepcopy(denoiser).backbone_call.compiled is None
    assert pickle.loads(pickle.dumps(denoiser)).backbone_call.compiled is None
    auto = PreconditionedDenoiser(mlp(), compile_backbone="auto")
    auto(x, sigma)
    assert auto.backbone_call.compiled is None  # "auto" compiles on a CUDA GPU only (tests/test_compile.py)
    with pytest.raises(ConfigError, match="compile_backbone"):
        PreconditionedDenoiser(backbone, compile_backbone=3)


# ----- checkpoints --------------------------------------------------------------------------------------------------
def test_a_checkpoint_written_before_the_denoiser_existed_loads(tmp_path):
    """Before, DiffusionModule registered the backbone itself and took a sigma_sampler; its checkpoints hold
    `backbone.*` weights and those hyper-parameters. They load into the module and, without Lightning, into the
    denoiser alone."""
    factory = functools.partial(MLP, width=16, depth=1)
    backbone = mlp()
    old = {"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
           "hyper_parameters": {"backbone": factory, "data_shape": (1, 4, 4), "num_classes": 0,
                                "preconditioning": EDMPreconditioning(), "sigma_sampler": LogNormalSigma(),
                                "lr": 1e-3, "optimizer": torch.optim.Adam, "lr_warmup_steps": 0,
                                "loss_sigma_edges": (0.05, 0.2), "val_sigmas": (0.1, 1.0), "seed": 0,
                                "compile_backbone": False},
           "pytorch-lightning_version": lightning.__version__}
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    module = DiffusionModule.load_from_checkpoint(path, weights_only=False)
    x, sigma = torch.randn(3, 1, 4, 4), torch.tensor([0.1, 1.0, 10.0])
    expected = old_edm_denoiser(backbone, x, sigma)
    torch.testing.assert_close(module(x, sigma), expected)
    assert set(module.state_dict()) == set(old["state_dict"])
    denoiser = PreconditionedDenoiser(factory((1, 4, 4), (1, 4, 4)))
    denoiser.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    torch.testing.assert_close(denoiser(x, sigma), expected)


def test_the_module_and_its_copies_share_one_backbone_with_their_denoiser():
    module = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 4, 4))
    assert module.denoiser.backbone is module.backbone
    assert set(module.state_dict()) == set(module.denoiser.state_dict())  # keys `backbone.*`, nothing twice
    twin = copy.deepcopy(module)  # as the EMA callback does
    assert twin.denoiser.backbone is twin.backbone and twin.backbone is not module.backbone
    module.eval()
    assert not module.denoiser.training and not module.backbone.training
