"""Noise processes in one convention: ``x_t = s(t) * (x_0 + sigma(t) * z)``.

Every analysis in the library works in *sigma-space* (``x = x_0 + sigma z``, the VE/EDM form).
A process only says how a user's time variable ``t`` maps onto ``(s, sigma)``, so that models
trained or analysed with DDPM indices or Ornstein-Uhlenbeck time can be moved into sigma-space
with one call (:meth:`NoiseProcess.to_sigma_space`) and back.
"""

from __future__ import annotations

import bisect
import math
from typing import Literal

import torch
from torch import Tensor

from .errors import ConfigError
from .per_sample import append_dims

__all__ = [
    "NoiseProcess",
    "VarianceExploding",
    "OrnsteinUhlenbeck",
    "DDPM",
    "VariancePreserving",
    "RectifiedFlow",
    "DiscreteSchedule",
    "SigmaOutOfRangeError",
    "refuse_sigma_outside",
    "edm_sigma_grid",
]


def edm_sigma_grid(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *, append_zero: bool = False
) -> Tensor:
    """Karras et al. (EDM) rho-schedule, from ``sigma_max`` down to ``sigma_min`` (float64).

    ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if num_steps == 1:
        grid = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(num_steps, dtype=torch.float64)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        grid = (a + i / (num_steps - 1) * (b - a)) ** rho
    if append_zero:
        grid = torch.cat([grid, grid.new_zeros(1)])
    return grid


class NoiseProcess:
    """``x_t = s(t) (x_0 + sigma(t) z)``. Subclasses define :meth:`sigma`, :meth:`scale`, :meth:`t_of_sigma`."""

    def sigma(self, t: Tensor | float) -> Tensor:
        raise NotImplementedError

    def scale(self, t: Tensor | float) -> Tensor:
        raise NotImplementedError

    def t_of_sigma(self, sigma: Tensor | float) -> Tensor:
        raise NotImplementedError

    def scale_of_sigma(self, sigma: Tensor | float) -> Tensor:
        return self.scale(self.t_of_sigma(sigma))

    def time_and_scale(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """``(t_of_sigma(sigma), scale_of_sigma(sigma))`` in one call, so a process can share the work: an adapter
        (:mod:`diffuse_feat.denoisers.adapters`) asks for both on every forward pass."""
        return self.t_of_sigma(sigma), self.scale_of_sigma(sigma)

    def sigma_range(self) -> tuple[float, float]:
        """The noise levels a model trained on this process has seen, ``(lowest, highest)``."""
        return 0.0, math.inf

    def to_sigma_space(self, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Map a state at time ``t`` to ``(x_t / s(t), sigma(t))``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        s = self.scale(t).to(x_t.dtype).to(x_t.device)
        return x_t / _per_sample(s, x_t), self.sigma(t).to(x_t.device)

    def from_sigma_space(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
        """Map a sigma-space state to ``(s(t) x, t)``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        t = self.t_of_sigma(sigma)
        s = self.scale(t).to(x.dtype).to(x.device)
        return x * _per_sample(s, x), t.to(x.device)

    def add_noise(self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
        """Sample ``x_t`` given ``x_0``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        s = _per_sample(self.scale(t).to(x0), x0)
        sig = _per_sample(self.sigma(t).to(x0), x0)
        return s * (x0 + sig * z)


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a scalar or ``[B]`` tensor to broadcast against ``x`` of shape ``[B, ...]``."""
    v = v.to(device=x.device)
    return append_dims(v, x.ndim) if v.ndim == 1 else v


class VarianceExploding(NoiseProcess):
    """VE / EDM: ``s = 1``, ``sigma = t``."""

    def sigma(self, t):
        return torch.as_tensor(t, dtype=torch.float64)

    def scale(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def t_of_sigma(self, sigma):
        return torch.as_tensor(sigma, dtype=torch.float64)


class OrnsteinUhlenbeck(NoiseProcess):
    """``dx = -x dt + sqrt(2) dW``: ``x(t) = a e^{-t} + sqrt(1 - e^{-2t}) z`` (Biroli et al.).

    In sigma-space: ``s = e^{-t}``, ``sigma = sqrt(e^{2t} - 1)``, ``t = log(1 + sigma^2) / 2``.
    """

    def sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.sqrt(torch.expm1(2 * t))

    def scale(self, t):
        return torch.exp(-torch.as_tensor(t, dtype=torch.float64))

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return 0.5 * torch.log1p(sigma**2)

    @staticmethod
    def delta(t):
        """``Delta_t = 1 - e^{-2t}``, the variance of the noise in OU time."""
        return -torch.expm1(-2 * torch.as_tensor(t, dtype=torch.float64))


class DDPM(NoiseProcess):
    """Discrete variance-preserving schedule (Ho et al.; Nichol & Dhariwal for ``cosine``).

    ``alpha_bar_k = prod_{i<=k} (1 - beta_i)`` for ``k = 0..T`` with ``alpha_bar_0 = 1``;
    ``s = sqrt(alpha_bar)``, ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``. Non-integer ``t`` is
    interpolated linearly in ``log alpha_bar`` so ``t <-> sigma`` is a smooth monotone bijection.
    """

    def __init__(
        self,
        num_steps: int = 1000,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
    ):
        self.num_steps = num_steps
        self.schedule = schedule
        k = torch.arange(1, num_steps + 1, dtype=torch.float64)
        if schedule == "linear":
            betas = beta_start + (beta_end - beta_start) * (k - 1) / max(num_steps - 1, 1)
        elif schedule == "cosine":
            f = lambda u: torch.cos((u / num_steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2  # noqa: E731
            betas = (1 - f(k) / f(k - 1)).clamp(max=0.999)
        else:
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        self.betas = betas
        self.log_alpha_bar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])

    def __getstate__(self) -> dict:
        # the per-device copies stay out of pickles (checkpoints' hyperparameters): CPU tables only
        return {k: v for k, v in self.__dict__.items() if k != "_tables"}

    def _table(self, device: torch.device) -> Tensor:
        """``log alpha_bar`` on ``device``, copied there once (a copy per call would sync a GPU every step)."""
        if self.log_alpha_bar.device != device:
            cache = self.__dict__.setdefault("_tables", {})
            if device not in cache:
                cache[device] = self.log_alpha_bar.to(device)
            return cache[device]
        return self.log_alpha_bar

    def _log_alpha_bar(self, t):
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_steps)
        table = self._table(t.device)
        lo = t.floor().long().clamp(max=self.num_steps - 1)
        w = t - lo
        return (1 - w) * table[lo] + w * table[lo + 1]

    def alpha_bar(self, t):
        return torch.exp(self._log_alpha_bar(t))

    def sigma_range(self) -> tuple[float, float]:
        return 0.0, float(self.sigma(self.num_steps))

    def sigma(self, t):
        return torch.sqrt(torch.expm1(-self._log_alpha_bar(t)))

    def scale(self, t):
        return torch.exp(0.5 * self._log_alpha_bar(t))

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        target = -torch.log1p(sigma**2)  # log alpha_bar, decreasing in t
        table = self._table(sigma.device)
        if bool((target < table[-1] - 1e-12).any()):
            raise ValueError(
                f"sigma={float(sigma.max()):.4g} exceeds this DDPM schedule's maximum "
                f"{float(self.sigma(self.num_steps)):.4g}"
            )
        hi = torch.searchsorted(-table, -target).clamp(1, self.num_steps)
        lo = hi - 1
        w = (table[lo] - target) / (table[lo] - table[hi])
        return lo.to(torch.float64) + w.clamp(0, 1)


# ----- processes of models trained elsewhere (used by diffuse_feat.denoisers.adapters) -------------------------------
class SigmaOutOfRangeError(ConfigError):
    """A noise level outside the range a model was trained on (a discrete schedule's table, VP's t <= 1); ``sigma``,
    ``low`` and ``high`` say which and what the range is."""

    def __init__(self, message: str, sigma: float = math.nan, low: float = 0.0, high: float = math.inf):
        super().__init__(message)
        self.sigma, self.low, self.high = sigma, low, high


def _check_sigma_in(process: NoiseProcess, sigma: Tensor, low: float, high: float) -> None:
    """Refuse sigma outside ``[low, high]`` with one sentence (:func:`_refuse_outside`)."""
    smallest, largest = (float(v) for v in torch.aminmax(sigma))  # one reduction: this runs on every call
    _refuse_outside(process, smallest, largest, low, high)


def _refuse_outside(process: NoiseProcess, smallest: float, largest: float, low: float, high: float) -> None:
    refuse_sigma_outside(smallest, largest, low, high, f"the model (its {type(process).__name__})")


def refuse_sigma_outside(smallest: float, largest: float, low: float, high: float, model: str) -> None:
    """Refuse sigmas from ``smallest`` to ``largest`` unless inside ``[low, high]``, the range ``model`` (words such as
    "the EDM network SongUNet") was trained on. A relative slack of 1e-5 lets the ends through after float32 arithmetic
    (a sampler's grid reaches the denoiser in float32; k-diffusion's Karras grid, computed in float32 with rho = 7, ends
    1.3e-6 below the sigma it was asked to end at)."""
    if smallest < low * (1 - 1e-5) or largest > high * (1 + 1e-5):
        bad = smallest if smallest < low * (1 - 1e-5) else largest
        raise SigmaOutOfRangeError(
            f"sigma={bad:.4g} lies outside the range {low:.4g} to {high:.4g} that {model} was trained on; ask for "
            "noise levels inside it", bad, low, high)


class VariancePreserving(NoiseProcess):
    """Continuous VP (Song et al. 2021): ``beta(t) = beta_min + t (beta_max - beta_min)`` for ``t`` in ``[0, 1]``,
    ``log alpha_bar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2)``, ``s = sqrt(alpha_bar)``,
    ``sigma = sqrt(1 / alpha_bar - 1)``. Sigma above ``sigma(1)`` is refused: the model never saw ``t > 1``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 <= beta_min < beta_max:
            raise ConfigError(f"VariancePreserving needs 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _log_alpha_bar(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t.square())

    def sigma(self, t):
        return torch.sqrt(torch.expm1(-self._log_alpha_bar(t)))

    def scale(self, t):
        return torch.exp(0.5 * self._log_alpha_bar(t))

    def scale_of_sigma(self, sigma):
        return torch.rsqrt(1 + torch.as_tensor(sigma, dtype=torch.float64).square())  # any VP: alpha_bar = 1/(1+s^2)

    def sigma_range(self) -> tuple[float, float]:
        if not hasattr(self, "_sigma_max"):
            self._sigma_max = float(self.sigma(1.0))
        return 0.0, self._sigma_max

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        _check_sigma_in(self, sigma, *self.sigma_range())
        # the positive root of (beta_max - beta_min)/2 t^2 + beta_min t = log(1 + sigma^2), written without the
        # cancellation of (-b + sqrt(b^2 + 4ac)) / 2a at small sigma
        a, b = 0.5 * (self.beta_max - self.beta_min), self.beta_min
        c = torch.log1p(sigma.square())
        return (2 * c / (b + torch.sqrt(b * b + 4 * a * c))).clamp(0, 1)


class RectifiedFlow(NoiseProcess):
    """Rectified flow / flow matching: ``x_t = (1 - t) x_0 + t eps`` for ``t`` in ``[0, 1)``, so ``s = 1 - t`` and
    ``sigma = t / (1 - t)``; ``t = sigma / (1 + sigma)``."""

    def sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return t / (1 - t)

    def scale(self, t):
        return 1 - torch.as_tensor(t, dtype=torch.float64)

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return sigma / (1 + sigma)

    def scale_of_sigma(self, sigma):
        return 1 / (1 + torch.as_tensor(sigma, dtype=torch.float64))


def _usable_alphas_cumprod(table: Tensor) -> Tensor:
    """The entries of an ``alphas_cumprod`` table a model can be evaluated at, or one sentence saying why none can.

    A zero-terminal-SNR table (``rescale_betas_zero_snr``) ends in ``alpha_bar = 0``: pure noise, ``sigma`` infinite,
    which no ``x = x0 + sigma z`` reaches; that last entry is dropped (the model's own timesteps keep their numbers),
    so the usable range ends at the one before it. diffusers' Euler schedulers store ``2**-24`` there instead, a finite
    sigma of 4096, which is kept."""
    if table.numel() >= 3 and float(table[-1]) == 0.0:
        table = table[:-1]
    if table.numel() < 2:
        raise ConfigError(f"alphas_cumprod has {table.numel()} usable value(s); a schedule needs at least two")
    outside = ((table <= 0) | (table > 1)).nonzero()
    if outside.numel():
        k = int(outside[0])
        raise ConfigError(f"alphas_cumprod[{k}] = {float(table[k]):.4g} is not in (0, 1]: it is the fraction of the "
                          "signal's variance left at that timestep (only the last entry may be 0)")
    flat = (table[1:] >= table[:-1]).nonzero()
    if flat.numel():
        k = int(flat[0]) + 1
        raise ConfigError(f"alphas_cumprod[{k}] = {float(table[k]):.6g} is not below alphas_cumprod[{k - 1}] = "
                          f"{float(table[k - 1]):.6g}: each timestep must be noisier than the one before, or sigma "
                          "does not name one timestep")
    return table


class DiscreteSchedule(NoiseProcess):
    """A discrete VP schedule given by its table ``alpha_bar[k]``, ``k = 0 .. N-1``: ``t`` is the model's own timestep
    (diffusers' ``alphas_cumprod``, where ``alpha_bar[0] = 1 - beta_1``; :class:`DDPM`'s ``t = 0`` is clean data).

    ``sigma(k) = sqrt(1 / alpha_bar[k] - 1)``, ``s(k) = sqrt(alpha_bar[k])``. How a continuous sigma becomes a timestep
    (:meth:`t_of_sigma`) is what ``timesteps`` says:

    * ``"interpolate"`` (default): a fractional timestep, ``log alpha_bar`` linear between integers (as in
      :class:`DDPM`), so ``t(sigma)`` is smooth and monotone: what ODE samplers and Jacobians need, and what a network
      with a sinusoidal time embedding (diffusers' U-Nets) accepts;
    * ``"nearest"``: the integer timestep whose sigma is nearest in ``log sigma``, for networks that only take
      integers (an embedding table). The input is still scaled by the requested sigma (:meth:`scale_of_sigma`), so
      ``D`` is exact on the table's sigmas and an approximation between them.

    Sigma outside ``[sigma(0), sigma(N-1)]`` is refused (:class:`SigmaOutOfRangeError`): the model never saw it.
    """

    # Up to this many sigmas, time_and_scale (an adapter's every forward pass) runs in plain Python, about 1 us a
    # value, instead of a dozen torch calls that take 30 us, and 100 right after a network's forward pass
    # (benchmarks/adapter_overhead.py).
    PYTHON_LOOKUP_MAX = 64

    def __init__(self, alphas_cumprod: Tensor, timesteps: Literal["interpolate", "nearest"] = "interpolate"):
        table = _usable_alphas_cumprod(torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1))
        if timesteps not in ("interpolate", "nearest"):
            raise ConfigError(f"timesteps must be 'interpolate' or 'nearest', got {timesteps!r}")
        self.timesteps = timesteps
        self.log_alpha_bar = torch.log(table)
        self.num_steps = table.numel()
        ends = torch.sqrt(torch.expm1(-self.log_alpha_bar[[0, -1]]))
        self._sigma_range = (float(ends[0]), float(ends[1]))  # read on every call: computed once
        self._table_list = (-self.log_alpha_bar).tolist()

    @classmethod
    def from_betas(cls, betas: Tensor, timesteps: Literal["interpolate", "nearest"] = "interpolate"
                   ) -> DiscreteSchedule:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.exp(torch.cumsum(torch.log1p(-betas), 0)), timesteps)

    @classmethod
    def from_ddpm(cls, process: DDPM, timesteps: Literal["interpolate", "nearest"] = "interpolate"
                  ) -> DiscreteSchedule:
        """The model timesteps ``0 .. T-1`` of a :class:`DDPM` schedule (its ``t = 1 .. T``)."""
        return cls.from_betas(process.betas, timesteps)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_tables"}

    def _table(self, device: torch.device) -> Tensor:
        """``-log alpha_bar`` (increasing) on ``device``, copied there once (a copy per call would sync a GPU)."""
        return self._cached("table", device, lambda: -self.log_alpha_bar)

    def _segments(self, device: torch.device) -> Tensor:
        """Row ``i`` of this ``[N + 1, 3]`` table is ``(k, L[k], 1 / (L[k + 1] - L[k]))`` for the segment whose right
        end is ``searchsorted(L, target) = i`` (``L = -log alpha_bar``; the ends clamped to the first and last
        segment), so interpolating a timestep is one lookup and one ``addcmul`` (this runs on every call)."""

        def build() -> Tensor:
            table = -self.log_alpha_bar
            lo = (torch.arange(self.num_steps + 1) - 1).clamp(0, self.num_steps - 2)
            return torch.stack([lo.double(), table[lo], 1 / (table[lo + 1] - table[lo])], dim=-1)

        return self._cached("segments", device, build)

    def _cached(self, name: str, device: torch.device, build) -> Tensor:
        cache = self.__dict__.setdefault("_tables", {})
        if (name, device) not in cache:
            cache[name, device] = build().to(device)
        return cache[name, device]

    def _log_alpha_bar(self, t):
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_steps - 1)
        table = -self._table(t.device)
        lo = t.floor().long().clamp(max=self.num_steps - 2)
        w = t - lo
        return (1 - w) * table[lo] + w * table[lo + 1]

    def sigma(self, t):
        return torch.sqrt(torch.expm1(-self._log_alpha_bar(t)))

    def scale(self, t):
        return torch.exp(0.5 * self._log_alpha_bar(t))

    def scale_of_sigma(self, sigma):
        return torch.rsqrt(1 + torch.as_tensor(sigma, dtype=torch.float64).square())  # exact for any sigma

    def sigma_range(self) -> tuple[float, float]:
        return self._sigma_range

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        _check_sigma_in(self, sigma, *self.sigma_range())
        table = self._table(sigma.device)
        target = torch.log1p(sigma.square())  # -log alpha_bar, increasing in t
        if self.timesteps == "nearest":  # nearest in log sigma^2 = log(e^L - 1), L = -log alpha_bar
            hi = torch.searchsorted(table, target).clamp_(1, self.num_steps - 1)
            lo = hi - 1
            log_sigma_sq = torch.log(sigma.square())
            d_lo = (log_sigma_sq - torch.log(torch.expm1(table[lo]))).abs()
            d_hi = (torch.log(torch.expm1(table[hi])) - log_sigma_sq).abs()
            return torch.where(d_hi < d_lo, hi, lo).to(torch.float64)
        k, below, inverse_slope = self._segments(sigma.device)[torch.searchsorted(table, target)].unbind(-1)
        return torch.addcmul(k, target - below, inverse_slope).clamp_(0, self.num_steps - 1)

    def time_and_scale(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`t_of_sigma` and :meth:`scale_of_sigma`; a CPU batch of up to :attr:`PYTHON_LOOKUP_MAX` values is
        looked up in plain Python (the same interpolation)."""
        if not (sigma.is_cpu and sigma.ndim == 1 and sigma.numel() <= self.PYTHON_LOOKUP_MAX
                and not sigma.requires_grad and self.timesteps == "interpolate"):
            return super().time_and_scale(sigma)
        sigmas = sigma.tolist()
        _refuse_outside(self, min(sigmas), max(sigmas), *self._sigma_range)
        table, last = self._table_list, self.num_steps - 1
        times, scales = [], []
        for s in sigmas:
            target = math.log1p(s * s)  # -log alpha_bar, increasing in t
            k = min(max(bisect.bisect_left(table, target), 1), last) - 1  # the segment [k, k + 1] holding it
            times.append(min(max(k + (target - table[k]) / (table[k + 1] - table[k]), 0.0), last))
            scales.append(math.exp(-0.5 * target))
        return torch.tensor(times, dtype=torch.float64), torch.tensor(scales, dtype=torch.float64)
