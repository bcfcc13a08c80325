"""Losses (``diffuse_feat.losses``) and the learned denoiser (``PreconditionedDenoiser``).

Each loss is checked against the formula the modules computed before losses were split out of them (a frozen copy
below, written out from the backbone by hand), on the same batch and the same seed.
"""

from __future__ import annotations

import copy
import functools
import math
import pickle
from pathlib import Path

import lightning
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger

from diffuse_feat.backbones import MLP
from diffuse_feat.backbones.patch_net import PatchNet
from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.data.two_patch import TwoPatchDataModule
from diffuse_feat.denoisers import CategoricalDenoiser, PreconditionedDenoiser
from diffuse_feat.errors import ConfigError
from diffuse_feat.losses import (
    CategoricalCrossEntropy,
    DenoisingScoreMatching,
    ExpectedNoisePredictionLoss,
    NoisePredictionLoss,
    SampledLoss,
    expected_tied_quadratic_loss,
)
from diffuse_feat.modules import CategoricalDiffusionModule, DiffusionModule
from diffuse_feat.preconditioning import (
    EDMPreconditioning,
    EpsilonPreconditioning,
    NoPreconditioning,
    Preconditioning,
    VEPreconditioning,
)
from diffuse_feat.reproduce.common import make_trainer
from diffuse_feat.reproduce.feature_learning import paper_diffusion_module
from diffuse_feat.sigma_sampling import LogNormalSigma, LogUniformSigma

REPO = Path(__file__).resolve().parent.parent


# ----- frozen copies of the formulas the modules used before the losses were split out ------------------------------
def old_edm_denoiser(backbone, x, sigma, sigma_data=0.5):
    """``DiffusionModule.denoise_unchecked`` with ``EDMPreconditioning``: ``c_skip x + c_out F(c_in x; sigma)``."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    total = s.square() + sigma_data**2
    return sigma_data**2 / total * x + s * sigma_data / total.sqrt() * backbone(total.rsqrt() * x, sigma)


def old_dsm_loss(backbone, x0, sigma, noise, sigma_data=0.5):
    """``DiffusionModule.per_sample_loss``: ``(s^2 + sd^2) / (s sd)^2 * mean_j (D(x0 + s z) - x0)_j^2``."""
    x = x0 + sigma.reshape(-1, *([1] * (x0.ndim - 1))) * noise
    err = (old_edm_denoiser(backbone, x, sigma, sigma_data) - x0).square().flatten(1).mean(1)
    return (sigma.square() + sigma_data**2) / (sigma * sigma_data).square() * err


def old_lognormal_draws(batch_shape, seed, p_mean=-1.2, p_std=1.2):
    """What ``DiffusionModule.compute_loss`` drew from the training generator: sigma first, then the noise."""
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(p_mean + p_std * torch.randn(batch_shape[0], generator=g))
    return sigma, torch.randn(batch_shape, generator=g)


def paper_patch_loss(net, x0, eps, alpha, beta):
    """Han et al.: ``sum_p 1/2 ||F(alpha x0 + beta eps) - eps||^2`` (``PatchDiffusionModule`` with sampled noise)."""
    return 0.5 * (net(alpha * x0 + beta * eps, None) - eps).square().flatten(1).sum(1)


def mlp(shape=(1, 4, 4), out=None, **kwargs):
    torch.manual_seed(0)
    return MLP(shape, out or shape, width=16, depth=1, **kwargs)


# ----- denoising score matching -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_data", [0.5, 0.242])
def test_dsm_equals_the_old_edm_loss_on_the_same_batch_and_seed(sigma_data):
    backbone = mlp()
    denoiser = PreconditionedDenoiser(backbone, EDMPreconditioning(sigma_data))
    x0 = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    losses, sigma = DenoisingScoreMatching()(denoiser, x0, torch.Generator().manual_seed(7))
    old_sigma, old_noise = old_lognormal_draws(x0.shape, seed=7)
    assert torch.equal(sigma, old_sigma)
    torch.testing.assert_close(losses, old_dsm_loss(backbone, x0, old_sigma, old_noise, sigma_data))
    # the same value through the module that holds the denoiser, from its seeded training generator
    module = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 4, 4),
                             preconditioning=EDMPreconditioning(sigma_data), seed=3)
    module.backbone.load_state_dict(backbone.state_dict())
    losses, sigma = module.loss(module.denoiser, x0, module.noise_generator)
    old_sigma, old_noise = old_lognormal_draws(x0.shape, seed=3 * 1_000_003)  # seed * 1_000_003 + rank
    torch.testing.assert_close(losses, old_dsm_loss(backbone, x0, old_sigma, old_noise, sigma_data))
    g = torch.Generator().manual_seed(3 * 1_000_003)
    torch.randn(8, generator=g), torch.randn(x0.shape, generator=g)
    assert torch.equal(module.noise_generator.get_state(), g.get_state())  # it drew sigma and noise, nothing more


class ClampedWeight(DenoisingScoreMatching):
    def __init__(self, max_weight: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.max_weight = max_weight

    def weight(self, sigma, denoiser):
        return super().weight(sigma, denoiser).clamp(max=self.max_weight)


def test_dsm_weight_and_sigma_density_are_the_losss_own():
    backbone = mlp()
    denoiser = PreconditionedDenoiser(backbone)
    x0, noise = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 50.0])
    plain = DenoisingScoreMatching().per_sample_loss(denoiser, x0, sigma, noise)
    capped = ClampedWeight(max_weight=5.0).per_sample_loss(denoiser, x0, sigma, noise)
    lam = EDMPreconditioning().loss_weight(sigma)
    assert bool((lam > 5).any()) and bool((lam < 5).any())
    torch.testing.assert_close(capped, plain / lam * lam.clamp(max=5.0))
    loss = DenoisingScoreMatching(sigma_sampler=LogUniformSigma(0.1, 0.2))
    drawn = loss(denoiser, x0).sigma
    assert bool(((0.1 <= drawn) & (drawn <= 0.2)).all())
    assert loss.fixed_sigma is None and NoisePredictionLoss(2.0).fixed_sigma == 2.0
    assert repr(ClampedWeight()) == ("ClampedWeight(sigma_sampler=LogNormalSigma(p_mean=-1.2, p_std=1.2), "
                                     "max_weight=5.0)")


# ----- Han et al.'s noise prediction: exact and sampled -------------------------------------------------------------
def test_expected_noise_prediction_loss_is_the_closed_form_and_draws_no_noise():
    torch.manual_seed(0)
    net = PatchNet((2, 20), (2, 20), width=5, init_std=0.3)
    denoiser = PreconditionedDenoiser(net, EpsilonPreconditioning())
    x0 = torch.randn(3, 2, 20)
    loss = ExpectedNoisePredictionLoss()
    assert (loss.alpha, loss.beta) == pytest.approx((0.6, 0.8))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    out = loss(denoiser, x0, g)
    assert isinstance(out, SampledLoss) and torch.equal(g.get_state(), state)  # deterministic gradient descent
    assert torch.equal(out.sigma, torch.full((3,), 4 / 3))
    # PatchDiffusionModule.expected_per_sample_loss, as it was
    old = expected_tied_quadratic_loss(net.first_layer_filters(), x0, 0.6, 0.8, net.output_scale)
    torch.testing.assert_close(out.per_sample, old, rtol=1e-6, atol=0)


def test_sampled_noise_prediction_loss_is_the_papers_and_averages_to_the_closed_form():
    """The sampled loss is ``1/2 ||F(alpha x0 + beta eps) - eps||^2`` summed over coordinates, written from the
    network by hand; its Monte-Carlo mean is the closed form within 4 standard errors (the sigma-space wiring is the
    paper's)."""
    torch.manual_seed(0)
    d = 20
    net = PatchNet((2, d), (2, d), width=5, init_std=0.3)
    denoiser = PreconditionedDenoiser(net, EpsilonPreconditioning())
    sampled, exact = NoisePredictionLoss(), ExpectedNoisePredictionLoss()
    x0 = torch.randn(3, 2, d)
    eps = torch.randn(3, 2, d)
    sigma = torch.full((3,), 4 / 3)
    with torch.no_grad():
        torch.testing.assert_close(sampled.per_sample_loss(denoiser, x0, sigma, eps),
                                   paper_patch_loss(net, x0, eps, 0.6, 0.8), rtol=1e-4, atol=1e-4)
        closed = exact(denoiser, x0).per_sample.double()
        draws = 40000
        reps = x0.repeat(draws, 1, 1)
        values = sampled(denoiser, reps, torch.Generator().manual_seed(1)).per_sample.double().reshape(draws, 3)
    mean, sem = values.mean(0), values.std(0) / math.sqrt(draws)
    assert bool(((mean - closed).abs() < 4 * sem).all()), (mean, closed, sem)


class RecordingLogger(Logger):
    """Keeps every ``(step, metrics)`` it is given."""

    name, version = "recorder", 0

    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.logged.append((step, dict(metrics)))


def test_a_fixed_sigma_loss_validates_at_its_sigma_in_one_bucket_and_exactly(tmp_path):
    """What PatchDiffusionModule logged: train/loss_by_sigma/all and val/loss (exact), no val bucket per sigma."""
    dm = TwoPatchDataModule(n_train=12, d=60, mu_norm=4.0, n_val=20, passes_per_epoch=2)
    model = paper_diffusion_module(PatchNet, dm.data_shape, lr=1e-2)
    assert model.val_sigmas == [4 / 3] and model.loss_bucket_names == ["all"]
    default = DiffusionModule(PatchNet, data_shape=dm.data_shape)
    assert len(default.val_sigmas) == 6 and len(default.loss_bucket_names) == 7
    trainer = make_trainer(max_steps=2, log_every_n_steps=1, default_root_dir=tmp_path)
    recorder = RecordingLogger()
    trainer.loggers = [recorder]
    trainer.fit(model, datamodule=dm)
    logged = trainer.logged_metrics
    assert {"train/loss", "train/loss_epoch", "val/loss"} == set(logged)
    # the buckets go to the loggers directly (one call an epoch, not a self.log each), at the epoch's step
    buckets = [(step, set(m)) for step, m in recorder.logged if any("loss_by_sigma" in k for k in m)]
    epochs = [step for step, m in recorder.logged if "train/loss_epoch" in m]
    assert buckets == [(step, {"train/loss_by_sigma/all"}) for step in epochs] and epochs
    net = model.backbone
    with torch.no_grad():
        exact = expected_tied_quadratic_loss(net.first_layer_filters(), dm.val_tensor(), 0.6, 0.8, net.output_scale)
    assert float(logged["val/loss"]) == pytest.approx(float(exact.mean()), rel=1e-5)


# ----- categorical cross-entropy ------------------------------------------------------------------------------------
def test_categorical_cross_entropy_equals_the_old_loss_on_the_same_batch_and_seed():
    v, n = 4, 6
    backbone = mlp((v, n))
    denoiser = CategoricalDenoiser(backbone, EDMPreconditioning(0.3), encoding_scale=1.5)
    symbols = torch.randint(0, v, (5, n), generator=torch.Generator().manual_seed(2))
    x0 = 1.5 * (F.one_hot(symbols, v).movedim(-1, 1).float() - 1 / v)
    losses, sigma = CategoricalCrossEntropy()(denoiser, x0, torch.Generator().manual_seed(9))
    old_sigma, old_noise = old_lognormal_draws(x0.shape, seed=9)
    assert torch.equal(sigma, old_sigma)
    x = x0 + old_sigma[:, None, None] * old_noise
    c_in = (old_sigma.square() + 0.3**2).rsqrt()[:, None, None]
    # CategoricalDiffusionModule.per_sample_loss, as it was
    old = F.cross_entropy(backbone(c_in * x, old_sigma), symbols, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(losses, old)
    # and the denoiser is the posterior mean of the codes under the softmax of those logits
    probs = torch.softmax(backbone(c_in * x, old_sigma), dim=1)
    torch.testing.assert_close(denoiser(x, old_sigma), 1.5 * (probs - 1 / v))


def test_each_loss_refuses_a_denoiser_it_cannot_train():
    with pytest.raises(ConfigError, match="model.class_path=diffuse_feat.modules.CategoricalDiffusionModule"):
        DiffusionModule(MLP, data_shape=(4, 6), loss=CategoricalCrossEntropy())
    module = CategoricalDiffusionModule(functools.partial(MLP, width=8, depth=1), data_shape=(4, 6))
    assert isinstance(module.loss, CategoricalCrossEntropy) and isinstance(module.denoiser, CategoricalDenoiser)


# ----- a loss chosen by class_path ----------------------------------------------------------------------------------
class CountingUniformWeight(DenoisingScoreMatching):
    """Uniform weight ``scale``; counts the training batches it saw, so a test can see that training went through it."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.batches = scale, 0

    def __call__(self, denoiser, x0, generator=None):
        self.batches += 1
        return super().__call__(denoiser, x0, generator)

    def weight(self, sigma, denoiser):
        return torch.full_like(sigma, self.scale)


def test_a_custom_loss_chosen_by_class_path_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = DiffuseFeatCLI(args=[
        "fit", "--config", str(REPO / "configs/default.yaml"),
        "--model.init_args.loss=tests.test_losses.CountingUniformWeight", "--model.init_args.loss.init_args.scale=2.0",
        "--model.init_args.loss.init_args.sigma_sampler=diffuse_feat.sigma_sampling.LogUniformSigma",
        "--data.init_args.n_train=128", "--data.init_args.batch_size=32", "--trainer.max_steps=5",
        "--trainer.limit_val_batches=1", "--model.init_args.backbone.init_args.width=16",
        "--model.init_args.backbone.init_args.depth=1", "--trainer.callbacks.init_args.num_samples=2",
        "--trainer.callbacks.init_args.num_steps=2", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.enable_checkpointing=false", "--trainer.log_every_n_steps=1",
    ])
    loss = cli.model.loss
    assert type(loss) is CountingUniformWeight and loss.scale == 2.0 and isinstance(loss.sigma_sampler, LogUniformSigma)
    assert cli.trainer.global_step == loss.batches == 5
    assert bool(torch.isfinite(cli.trainer.logged_metrics["train/loss"]))


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
        losses = DenoisingScoreMatching().per_sample_loss(denoiser, x, sigma, torch.randn_like(x))
    assert seen["dtype"] == raw.dtype == torch.bfloat16 and out.dtype == losses.dtype == torch.float32
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
