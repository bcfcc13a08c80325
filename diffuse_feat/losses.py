"""Training objectives: small callables ``loss(denoiser, x0, generator) -> SampledLoss(per_sample, sigma)``.

Each loss owns its density of noise levels (``sigma_sampler``) and its weighting, as in EDM's ``training/loss.py``;
the module that trains with it only averages, logs and steps. Chosen in YAML by ``model.init_args.loss.class_path``.

* :class:`DenoisingScoreMatching` — ``lambda(sigma) mean_j (D(x0 + sigma z; sigma) - x0)_j^2`` (the default);
* :class:`NoisePredictionLoss` — Han et al.'s DDPM noise prediction at one noise level, ``1/2 ||F - eps||^2``;
* :class:`ExpectedNoisePredictionLoss` — its exact expectation over ``eps`` for the tied quadratic ``PatchNet``;
* :class:`CategoricalCrossEntropy` — cross-entropy of a one-hot denoiser's logits against the clean symbols.

A new loss subclasses :class:`Loss` and implements :meth:`Loss.per_sample_loss`; it draws ``sigma`` then ``z`` from
the module's seeded generator, so a resumed run sees the noise an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .per_sample import append_dims
from .preconditioning import EpsilonPreconditioning
from .sigma_sampling import FixedSigma, LogNormalSigma, SigmaSampler

__all__ = ["SampledLoss", "Loss", "DenoisingScoreMatching", "NoisePredictionLoss", "ExpectedNoisePredictionLoss",
           "CategoricalCrossEntropy", "expected_tied_quadratic_loss"]


class SampledLoss(NamedTuple):
    """What a loss returns: the loss of each sample ``[B]`` and the noise level it was measured at ``[B]``
    (the module logs ``train/loss_by_sigma/*`` from the pair)."""

    per_sample: Tensor
    sigma: Tensor


def _noised(x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    return x0 + append_dims(sigma, x0.ndim) * noise


class Loss:
    """Base class: draws ``sigma ~ sigma_sampler`` and ``z ~ N(0, I)`` (in that order) and returns
    :meth:`per_sample_loss` at them. Subclasses implement :meth:`per_sample_loss`; :meth:`check_denoiser` refuses,
    when the module is built, a denoiser the loss cannot train."""

    def __init__(self, sigma_sampler: SigmaSampler | None = None):
        self.sigma_sampler = sigma_sampler if sigma_sampler is not None else LogNormalSigma()

    def __call__(self, denoiser: nn.Module, x0: Tensor, generator: torch.Generator | None = None) -> SampledLoss:
        sigma = self.sigma_sampler.sample(x0.shape[0], device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=torch.float32, generator=generator)
        return SampledLoss(self.per_sample_loss(denoiser, x0, sigma, noise), sigma)

    def per_sample_loss(self, denoiser: nn.Module, x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
        """The loss of each sample ``[B]`` at noise levels ``sigma [B]`` and standard normal ``noise`` (like ``x0``);
        validation calls it with fixed sigmas and fixed noise."""
        raise NotImplementedError

    def check_denoiser(self, denoiser: nn.Module) -> None:
        """Raise :class:`~diffuse_feat.errors.ConfigError` if this loss cannot train ``denoiser``."""

    @property
    def fixed_sigma(self) -> float | None:
        """The one noise level this loss trains at, or ``None`` when it draws them from a spread."""
        return float(self.sigma_sampler.sigma) if isinstance(self.sigma_sampler, FixedSigma) else None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class DenoisingScoreMatching(Loss):
    """``lambda(sigma) * mean_j (D(x0 + sigma z; sigma) - x0)_j^2`` with ``ln sigma ~ N(-1.2, 1.2^2)`` by default.

    Override :meth:`weight` for another ``lambda(sigma)``, or pass another ``sigma_sampler``.
    """

    def __init__(self, sigma_sampler: SigmaSampler = LogNormalSigma()):
        super().__init__(sigma_sampler)

    def weight(self, sigma: Tensor, denoiser: nn.Module) -> Tensor:
        """``lambda(sigma)``, ``[B]``; default: the denoiser's preconditioning's (EDM ``(s^2+sd^2)/(s sd)^2``), which
        trains the backbone on a unit-variance target at every noise level."""
        return denoiser.preconditioning.loss_weight(sigma)

    def per_sample_loss(self, denoiser, x0, sigma, noise):
        err = (denoiser(_noised(x0, sigma, noise), sigma) - x0.float()).square().flatten(1).mean(1)
        return self.weight(sigma, denoiser) * err


def _needs_noise_prediction(loss: Loss, denoiser: nn.Module) -> None:
    if not isinstance(getattr(denoiser, "preconditioning", None), EpsilonPreconditioning):
        got = type(getattr(denoiser, "preconditioning", None)).__name__
        raise ConfigError(f"{type(loss).__name__} trains the backbone to predict the noise: set "
                          "model.init_args.preconditioning.class_path=diffuse_feat.preconditioning.EpsilonPreconditioning"
                          f" (got {got})")


def _alpha_beta(sigma: float) -> tuple[float, float]:
    return 1.0 / math.sqrt(1.0 + sigma**2), sigma / math.sqrt(1.0 + sigma**2)


class NoisePredictionLoss(DenoisingScoreMatching):
    """Han et al.'s diffusion objective with sampled noise: DDPM noise prediction at one noise level with the paper's
    normalisation, ``1/2 ||F(alpha x0 + beta eps) - eps||^2`` summed over coordinates (so SGD's ``lr`` is the paper's
    ``eta``). Needs ``EpsilonPreconditioning``.

    In sigma-space the paper's corruption ``alpha x0 + beta eps`` (``alpha^2 + beta^2 = 1``) is ``x = x0 + sigma eps``
    seen through ``EpsilonPreconditioning``: the backbone receives ``c_in x = x / sqrt(1 + sigma^2)``, so
    ``alpha = 1 / sqrt(1 + sigma^2)``, ``beta = sigma / sqrt(1 + sigma^2)`` and ``sigma = beta / alpha``; the paper's
    ``(alpha, beta) = (0.6, 0.8)`` is ``sigma = 4/3``. Its ``lambda = 1 / sigma^2`` turns ``(D - x0)^2`` into
    ``(F - eps)^2``; the mean over coordinates becomes the paper's half sum.
    """

    def __init__(self, sigma: float = 4.0 / 3.0):
        if sigma <= 0:
            raise ConfigError("model.init_args.loss.init_args.sigma must be > 0 (the fixed noise level, "
                              f"beta / alpha), got {sigma}")
        super().__init__(FixedSigma(sigma))
        self.sigma = float(sigma)

    @property
    def alpha(self) -> float:
        return _alpha_beta(self.sigma)[0]

    @property
    def beta(self) -> float:
        return _alpha_beta(self.sigma)[1]

    def per_sample_loss(self, denoiser, x0, sigma, noise):
        return super().per_sample_loss(denoiser, x0, sigma, noise) * (x0[0].numel() / 2)

    def check_denoiser(self, denoiser):
        _needs_noise_prediction(self, denoiser)


def expected_tied_quadratic_loss(filters: Tensor, x0: Tensor, alpha: float, beta: float, scale: float) -> Tensor:
    """``sum_p E_eps 1/2 ||f(alpha x0^(p) + beta eps^(p)) - eps^(p)||^2`` per sample, ``eps ~ N(0, I)``, exactly,
    for the tied quadratic network ``f(x) = c sum_r <w_r, x>^2 w_r`` (note §7.1).

    With ``G = W W^T``, ``N_r = G_rr``, ``a_r = alpha <w_r, x0>`` and ``q_r = a_r^2 + beta^2 N_r``, the
    noisy pre-activations are ``u ~ N(a, beta^2 G)`` and Isserlis' theorem gives, per patch,

        d/2 + c^2/2 q^T G q + c^2 beta^4 sum_rs G_rs^3 + 2 c^2 beta^2 sum_rs a_r a_s G_rs^2 - 2 c beta sum_r a_r N_r.

    Args:
        filters: ``W`` as ``[m, d]``; x0: clean inputs ``[B, P, d]``; scale: ``c``. Returns ``[B]``.
    """
    gram = filters @ filters.T
    sq_norms = gram.diagonal()
    a = alpha * x0 @ filters.T  # [B, P, m]
    q = a.square() + beta**2 * sq_norms
    c2 = scale**2
    per_patch = (
        x0.shape[-1] / 2
        + 0.5 * c2 * ((q @ gram) * q).sum(-1)
        + c2 * beta**4 * gram.pow(3).sum()
        + 2 * c2 * beta**2 * ((a @ gram.square()) * a).sum(-1)
        - 2 * scale * beta * (a * sq_norms).sum(-1)
    )
    return per_patch.sum(-1)


class ExpectedNoisePredictionLoss(NoisePredictionLoss):
    """:class:`NoisePredictionLoss` averaged *exactly* over ``eps`` (:func:`expected_tied_quadratic_loss`): gradient
    descent is deterministic, as in the theory, and no noise is drawn. Needs a ``PatchNet`` backbone with the square
    activation (the closed form is for the tied quadratic network) and ``EpsilonPreconditioning``.
    """

    def __call__(self, denoiser, x0, generator=None):
        sigma = torch.full((x0.shape[0],), self.sigma, device=x0.device)
        return SampledLoss(self.per_sample_loss(denoiser, x0, sigma, None), sigma)

    def per_sample_loss(self, denoiser, x0, sigma, noise):
        """The expectation over the noise at this loss's ``sigma`` (``sigma`` and ``noise`` are not read)."""
        net = denoiser.backbone
        filters = net.first_layer_filters()
        return expected_tied_quadratic_loss(filters, x0.to(filters.dtype), self.alpha, self.beta, net.output_scale)

    def check_denoiser(self, denoiser):
        net = getattr(denoiser, "backbone", None)
        if not (getattr(net, "is_denoiser", False) and getattr(net, "activation", None) == "square"):
            raise ConfigError(
                "ExpectedNoisePredictionLoss needs a PatchNet backbone with activation 'square' (the closed form is "
                "for the tied quadratic network); set "
                "model.init_args.loss.class_path=diffuse_feat.losses.NoisePredictionLoss to sample the noise instead")
        super().check_denoiser(denoiser)


class CategoricalCrossEntropy(Loss):
    """Cross-entropy of the logits at ``x0 + sigma z`` against the clean symbols ``argmax x0``, averaged over
    positions, for one-hot data and a denoiser with ``logits(x, sigma)`` (``CategoricalDenoiser``).

    Its minimiser is the exact marginal posterior of each position, hence the same ``E[x0 | x]`` the squared error
    targets; its gradient does not vanish when the model is confidently wrong, and deep grammars are learned several
    times faster (the "score interpolation" of Dieleman et al. 2022, CDCD). Weighted uniformly in sigma: the sigma
    density sets the emphasis.
    """

    def __init__(self, sigma_sampler: SigmaSampler = LogNormalSigma()):
        super().__init__(sigma_sampler)

    def per_sample_loss(self, denoiser, x0, sigma, noise):
        logits = denoiser.logits(_noised(x0, sigma, noise), sigma)
        return F.cross_entropy(logits, x0.argmax(1), reduction="none").flatten(1).mean(1)

    def check_denoiser(self, denoiser):
        if not callable(getattr(denoiser, "logits", None)):
            raise ConfigError(
                f"CategoricalCrossEntropy needs a denoiser with logits(x, sigma), but {type(denoiser).__name__} has "
                "none; set model.class_path=diffuse_feat.modules.CategoricalDiffusionModule")
