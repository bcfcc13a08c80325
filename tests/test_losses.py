"""The learned denoiser (``PreconditionedDenoiser``): the closed form of its preconditioning, its fp32 boundary and
its compiled training path."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from diffuse_feat.backbones import MLP
from diffuse_feat.denoisers import CategoricalDenoiser, PreconditionedDenoiser
from diffuse_feat.errors import ConfigError
from diffuse_feat.preconditioning import (
    EDMPreconditioning,
    EpsilonPreconditioning,
    NoPreconditioning,
    Preconditioning,
    VEPreconditioning,
)


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
    # one number for the whole batch
    torch.testing.assert_close(denoiser(x, 0.7), denoiser(x, torch.full((5,), 0.7)))
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
