"""Networks trained elsewhere, in another parametrization and noise process, as sigma-space denoisers ``D(x, sigma)``.

A network ``net(x_t, time)`` trained on ``x_t = s(t) (x0 + sigma(t) eps)`` (a process of :mod:`diffuse_feat.process`:
a discrete DDPM table, continuous VP, VE/EDM, rectified flow) predicts one quantity; one class below per quantity maps
sigma to the network's time and input (``x_t = s x``), calls it, and turns its output into ``E[x0 | x]``. With
``x_t = alpha x0 + sig eps``, ``alpha = s``, ``sig = s sigma``:

==============  ===========================================  ===========================================
class           the network predicts                         ``D(x, sigma)``
==============  ===========================================  ===========================================
``eps``         the noise ``eps``                            ``x - sigma eps``
``x0``          the clean sample                             the output
``v``           ``alpha eps - sig x0`` (Salimans & Ho)       ``(alpha x_t - sig v) / (alpha^2 + sig^2)``
``flow``        ``dx_t/dt = eps - x0`` (rectified flow)      ``x_t - t u``
``edm``         EDM's ``F_theta`` (Karras et al. 2022)       ``c_skip x + c_out F(c_in x; ln(sigma) / 4)``
==============  ===========================================  ===========================================

Sigma is turned into time in float64 (a DDPM timestep from a float32 sigma can be off by 1e-3 at the low end); the
input, the output and the conversion are fp32 while the network may run under autocast, the same fp32 boundary as
:class:`~diffuse_feat.denoisers.PreconditionedDenoiser`. A process with a finite range (a DDPM table, VP's ``t <= 1``)
refuses sigma outside it with one sentence (:class:`~diffuse_feat.process.SigmaOutOfRangeError`); ``sigma_min`` and
``sigma_max`` say what it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError, SigmaError
from ..per_sample import append_dims, check_sigma_values
from ..preconditioning import EDMPreconditioning
from ..process import DDPM, DiscreteSchedule, NoiseProcess, RectifiedFlow, VarianceExploding, VariancePreserving

__all__ = [
    "PredictionDenoiser",
    "EpsilonPredictionDenoiser",
    "SamplePredictionDenoiser",
    "VPredictionDenoiser",
    "FlowVelocityDenoiser",
    "EDMDenoiser",
    "PARAMETRIZATIONS",
    "PROCESSES",
    "make_process",
    "wrap_prediction",
    "sigma_float64",
    "check_sample_shape",
    "without_learned_variance",
]

Network = Callable[[Tensor, Tensor], Tensor]
SMALL_CPU_BATCH = 64  # up to this many sigmas on CPU, checks and lookups run in plain Python (see DiscreteSchedule)


def sigma_float64(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as ``[B]`` float64 on ``x``'s device, refused in one sentence
    (:class:`~diffuse_feat.errors.SigmaError`) unless it is one value or one per sample, each finite and >= 0 (a NaN
    inside a tensor included)."""
    batch = x.shape[0]
    if not isinstance(sigma, Tensor):
        value = float(sigma)
        check_sigma_values(value, value)
        return torch.full((batch,), value, device=x.device, dtype=torch.float64)
    s = sigma if sigma.dtype == torch.float64 and sigma.device == x.device else sigma.to(x.device, torch.float64)
    if s.ndim != 1:  # every call skipped here counts: an adapter calls this on every forward pass
        s = s.expand(batch) if s.ndim == 0 else s.reshape(-1)
    if s.shape[0] != batch:
        raise SigmaError(f"sigma has {s.shape[0]} values but the batch has {batch}; pass one sigma or one per sample")
    if s.is_cpu and s.numel() <= SMALL_CPU_BATCH:  # plain Python: 1 us where a reduction costs 5 to 10
        bad = next((v for v in s.tolist() if not 0 <= v < math.inf), None)  # NaN fails the comparison too
        if bad is not None:
            check_sigma_values(bad, bad)
    else:
        check_sigma_values(*(float(v) for v in torch.aminmax(s)))  # one reduction, NaN included
    return s


def check_sample_shape(x: Tensor, data_shape: tuple[int, ...] | None, model: str) -> None:
    """One sentence unless ``x`` is a batch of samples of ``data_shape`` (unknown: anything goes)."""
    if data_shape is not None and tuple(x.shape[1:]) != data_shape:
        what = (f"{x.shape[1]} channels where it takes {data_shape[0]}"
                if x.ndim == len(data_shape) + 1 and x.shape[1] != data_shape[0] else f"shape {list(x.shape[1:])}")
        raise ShapeError(f"{model} takes a batch of samples of shape {list(data_shape)} and got samples of {what}; "
                         "give it data of the shape it was trained on")


def without_learned_variance(out: Tensor, x_t: Tensor, model: str) -> Tensor:
    """A network's prediction for ``x_t``: its output, or the first half of the channels of a model that also learned
    the variance (guided-diffusion's and diffusers' ``learned``/``learned_range``: ``[eps or v, variance]``, twice the
    input's channels); any other channel count is refused in one sentence naming both numbers."""
    if out.shape == x_t.shape:
        return out
    channels = x_t.shape[1]
    if out.ndim == x_t.ndim and out.shape[1] == 2 * channels and out.shape[2:] == x_t.shape[2:]:
        return out[:, :channels]
    got = f"{out.shape[1]} channels" if out.ndim == x_t.ndim and out.shape[2:] == x_t.shape[2:] else list(out.shape)
    raise ShapeError(f"{model} returned {got} for an input of {channels} channels; a network predicts as many "
                     f"channels as its input ({channels}), or twice as many ({2 * channels}) with a learned variance")


class PredictionDenoiser(nn.Module):
    """``D(x, sigma)`` from a network ``net(x_t, time)`` trained on ``process``; subclasses convert its output.

    Args:
        net: the network (an ``nn.Module`` or any callable returning a tensor shaped like ``x_t``).
        process: its noise process; the network is told ``time = time_scale * process.t_of_sigma(sigma)``.
        time_scale: e.g. 1000 for a flow-matching model told ``1000 t``, 999 for a VP model told ``999 t``.
        time_dtype: the dtype of the time the network gets (float32: what networks take; float64 for exact models).
        data_shape: the shape of one sample, when known (diagnostics read it).
    """

    parametrization: str = ""

    def __init__(self, net: Network, process: NoiseProcess, *, time_scale: float = 1.0,
                 time_dtype: torch.dtype = torch.float32, data_shape: Sequence[int] | None = None):
        super().__init__()
        self.net = net
        self.process = process
        self.time_scale, self.time_dtype = float(time_scale), time_dtype
        self.data_shape = tuple(int(d) for d in data_shape) if data_shape is not None else None
        self.sigma_min, self.sigma_max = process.sigma_range()

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        check_sample_shape(x, self.data_shape, self.model_name)
        sigma64 = sigma_float64(sigma, x)
        t, scale = self.process.time_and_scale(sigma64)  # refuses sigma outside the process's range
        time = (t * self.time_scale if self.time_scale != 1.0 else t).to(self.time_dtype)
        scale = append_dims(scale.float(), x.ndim)
        x = x.float()
        x_t = scale * x
        out = without_learned_variance(self.net(x_t, time).float(), x_t, self.model_name)
        return self.to_denoised(out, x, x_t, append_dims(sigma64.float(), x.ndim), scale)

    @property
    def model_name(self) -> str:
        return f"the {self.parametrization} model {type(self.net).__name__}"

    def to_denoised(self, out: Tensor, x: Tensor, x_t: Tensor, sigma: Tensor, scale: Tensor) -> Tensor:
        """``E[x0 | x]`` from the network's output (all fp32, ``sigma`` and ``scale`` broadcastable)."""
        raise NotImplementedError


class EpsilonPredictionDenoiser(PredictionDenoiser):
    """The network predicts the noise: ``D = x - sigma eps`` (``x0 = (x_t - sig eps) / alpha`` in sigma-space)."""

    parametrization = "eps"

    def to_denoised(self, out, x, x_t, sigma, scale):
        return torch.addcmul(x, sigma, out, value=-1)


class SamplePredictionDenoiser(PredictionDenoiser):
    """The network predicts ``x0`` itself (diffusers' ``prediction_type="sample"``)."""

    parametrization = "x0"

    def to_denoised(self, out, x, x_t, sigma, scale):
        return out


class VPredictionDenoiser(PredictionDenoiser):
    """The network predicts ``v = alpha eps - sig x0``: ``x0 = (alpha x_t - sig v) / (alpha^2 + sig^2)``, which is
    ``(x - sigma v / s) / (1 + sigma^2)`` in sigma-space (``alpha x_t - sig v`` on a VP process, where
    ``alpha^2 + sig^2 = 1``)."""

    parametrization = "v"

    def to_denoised(self, out, x, x_t, sigma, scale):
        return (x - sigma * out / scale) / (1 + sigma.square())


class FlowVelocityDenoiser(PredictionDenoiser):
    """The network predicts the flow-matching velocity ``u = dx_t/dt = eps - x0`` of rectified flow
    (``x_t = (1 - t) x0 + t eps``): ``x0 = x_t - t u``."""

    parametrization = "flow"

    def __init__(self, net: Network, process: NoiseProcess | None = None, **kwargs):
        process = RectifiedFlow() if process is None else process
        if not isinstance(process, RectifiedFlow):
            raise ConfigError(f"a flow-velocity model needs the rectified-flow process (x_t = (1 - t) x0 + t eps), "
                              f"got {type(process).__name__}; use process='rectified_flow'")
        super().__init__(net, process, **kwargs)

    def to_denoised(self, out, x, x_t, sigma, scale):
        return x_t - (sigma / (1 + sigma)) * out


def edm_noise_conditioning(sigma: Tensor) -> Tensor:
    """EDM's ``c_noise = ln(sigma) / 4`` (sigma floored at 1e-20 so sigma = 0, where ``c_out = 0``, stays finite)."""
    return 0.25 * torch.log(sigma.clamp_min(1e-20))


class EDMDenoiser(PredictionDenoiser):
    """EDM's ``F_theta`` (Karras et al. 2022, ``EDMPrecond``): ``D = c_skip x + c_out F(c_in x; c_noise)`` with the EDM
    coefficients for ``sigma_data`` and ``c_noise = ln(sigma) / 4`` (``noise_conditioning`` changes it). The process is
    VE/EDM (``s = 1``)."""

    parametrization = "edm"

    def __init__(self, net: Network, process: NoiseProcess | None = None, *, sigma_data: float = 0.5,
                 noise_conditioning: Callable[[Tensor], Tensor] = edm_noise_conditioning, **kwargs):
        process = VarianceExploding() if process is None else process
        if not isinstance(process, VarianceExploding):
            raise ConfigError(f"EDM's F_theta is defined on the VE/EDM process (x = x0 + sigma eps), got "
                              f"{type(process).__name__}; use process='edm'")
        super().__init__(net, process, **kwargs)
        self.preconditioning = EDMPreconditioning(sigma_data)
        self.noise_conditioning = noise_conditioning

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        check_sample_shape(x, self.data_shape, self.model_name)
        sigma64 = sigma_float64(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.preconditioning.coefficients(sigma64.float()))
        x = x.float()
        out = self.net(c_in * x, self.noise_conditioning(sigma64).to(self.time_dtype)).float()
        if out.shape != x.shape:  # EDM's F has no variance half
            raise ShapeError(f"{self.model_name} returned {list(out.shape)} for an input of {list(x.shape)}; EDM's F "
                             "predicts one output shaped like its input")
        return c_skip * x + c_out * out


PARAMETRIZATIONS: dict[str, type[PredictionDenoiser]] = {
    cls.parametrization: cls
    for cls in (EpsilonPredictionDenoiser, VPredictionDenoiser, SamplePredictionDenoiser, EDMDenoiser,
                FlowVelocityDenoiser)
}

ProcessName = Literal["ddpm", "vp", "ve", "edm", "rectified_flow"]
PROCESSES: dict[str, str] = {
    "ddpm": "discrete DDPM schedule (num_train_timesteps, beta_schedule, beta_start, beta_end; or alphas_cumprod)",
    "vp": "continuous VP, t in [0, 1] (beta_min, beta_max)",
    "ve": "variance exploding, time = sigma",
    "edm": "EDM (as ve; the edm parametrization is told ln(sigma) / 4)",
    "rectified_flow": "x_t = (1 - t) x0 + t eps, t in [0, 1)",
}


def make_process(name: str, *, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, alphas_cumprod: Tensor | None = None,
                 timesteps: Literal["interpolate", "nearest"] = "interpolate", beta_min: float = 0.1,
                 beta_max: float = 20.0) -> NoiseProcess:
    """A process by name (:data:`PROCESSES`); the keyword arguments of the other processes are ignored."""
    if name == "ddpm":
        if alphas_cumprod is not None:
            return DiscreteSchedule(alphas_cumprod, timesteps)
        if beta_schedule not in ("linear", "cosine"):
            raise ConfigError(f"beta_schedule must be 'linear' or 'cosine', got {beta_schedule!r}")
        return DiscreteSchedule.from_ddpm(DDPM(num_train_timesteps, beta_schedule, beta_start, beta_end), timesteps)
    if name == "vp":
        return VariancePreserving(beta_min, beta_max)
    if name in ("ve", "edm"):
        return VarianceExploding()
    if name == "rectified_flow":
        return RectifiedFlow()
    raise ConfigError(f"process {name!r} is not one of {', '.join(PROCESSES)}; pick the one the model was trained on")


def wrap_prediction(net: Network, parametrization: str, process: str | NoiseProcess, *, time_scale: float = 1.0,
                    time_dtype: torch.dtype = torch.float32, data_shape: Sequence[int] | None = None,
                    sigma_data: float = 0.5, **process_kwargs) -> PredictionDenoiser:
    """``net`` as ``D(x, sigma)``: ``parametrization`` one of :data:`PARAMETRIZATIONS` (eps, v, x0, edm, flow),
    ``process`` a :class:`~diffuse_feat.process.NoiseProcess` or a name of :data:`PROCESSES` (then built with
    ``process_kwargs``, see :func:`make_process`)."""
    if parametrization not in PARAMETRIZATIONS:
        raise ConfigError(f"parametrization {parametrization!r} is not one of {', '.join(PARAMETRIZATIONS)}; "
                          "pick what the network predicts")
    if isinstance(process, str):
        process = make_process(process, **process_kwargs)
    cls = PARAMETRIZATIONS[parametrization]
    extra = {"sigma_data": sigma_data} if cls is EDMDenoiser else {}
    return cls(net, process, time_scale=time_scale, time_dtype=time_dtype, data_shape=data_shape, **extra)
