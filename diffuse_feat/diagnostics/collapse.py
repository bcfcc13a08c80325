"""Collapse onto training points along backward trajectories, and the entropy proxy (Biroli et al. 2024).

OU time throughout (:mod:`diffuse_feat.ou`). Three measures of the collapse time ``t_C``:

* :class:`NearestTrainTracker` / :func:`last_change_time`: along one trajectory, the index of the nearest
  ``e^{-t}``-scaled training point ``mu*(t) = argmin_mu |x(t) - e^{-t} a^mu|``; ``t_hat_C`` is the largest grid
  time after which ``mu*`` never changes (the authors' dynamical estimator);
* ``phi_C(t)``, both clones end on the same training point (:func:`.cloning.cloning_experiment`);
* :func:`entropy_proxy`: ``f^e(t) = s^sep(t) - s^e(t)`` from forward samples only, whose last zero is ``t_C``.

and the crossing-time estimates by linear interpolation: :func:`last_crossing`, :func:`estimate_speciation_time`
(``phi = 0.775``), :func:`estimate_collapse_time` (``f^e / alpha`` or ``phi_C`` at a level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..denoisers.empirical import EmpiricalDenoiser
from ..ou import ou_delta, ou_forward, ou_log_density
from ..regimes_theory import SPECIATION_LEVEL
from .neighbors import nearest_neighbors

__all__ = [
    "nearest_train_index",
    "NearestTrainTracker",
    "last_change_time",
    "entropy_proxy",
    "last_crossing",
    "estimate_speciation_time",
    "estimate_collapse_time",
    "COLLAPSE_PHI_LEVEL",
    "COLLAPSE_ENTROPY_LEVEL",
]

#: ``phi_C`` at ``t_C``: ~0.6 in the paper's image data (0.54-0.68) and in the note's exact-score runs (0.6-0.65)
COLLAPSE_PHI_LEVEL = 0.6
#: ``f^e / alpha = 0.1`` falls at 0.91-0.97 ``t_C`` in the authors' and the note's data (``f^e`` is smoothed near 0)
COLLAPSE_ENTROPY_LEVEL = 0.1


def nearest_train_index(x: Tensor, t: float, train: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest ``e^{-t} a^mu`` to each OU state ``x`` (``[B, ...]``): ``(distance to e^{-t} a^mu [B], mu [B])``."""
    dist, idx = nearest_neighbors(x * math.exp(t), train)  # |x - e^{-t} a| = e^{-t} |x e^t - a|
    return dist[:, 0] * math.exp(-t), idx[:, 0]


class NearestTrainTracker:
    """A step hook (``hook(step)``, :mod:`diffuse_feat.samplers`) for the OU samplers that follows
    ``mu*(t)`` at every grid time ``t <= t_max`` and keeps, per trajectory, the time since which it has not
    changed: after the last step, :attr:`last_change_time` is ``t_hat_C`` (censored at the first tracked time
    when ``mu*`` never changed). :attr:`index` and :attr:`distance` are ``mu*`` and its distance at the last call.
    """

    def __init__(self, train: Tensor, t_max: float = math.inf):
        self.train, self.t_max = train, t_max
        self.index: Tensor | None = None
        self.distance: Tensor | None = None
        self.last_change_time: Tensor | None = None
        self.num_calls = 0

    def __call__(self, step: dict) -> None:
        x, t = step["x"], step["t"]
        if t > self.t_max:
            return
        dist, idx = nearest_train_index(x, t, self.train.to(x.device))
        if self.index is None:
            self.last_change_time = torch.full(idx.shape, t, dtype=torch.float64, device=idx.device)
        else:
            self.last_change_time[idx != self.index] = t
        self.index, self.distance = idx, dist
        self.num_calls += 1


def last_change_time(times: Tensor, indices: Tensor) -> Tensor:
    """``t_hat_C`` from recorded nearest indices: ``times`` ``[K]`` decreasing, ``indices`` ``[K, B]``.

    The largest ``times[j]`` such that ``indices[k] == indices[K-1]`` for every ``k >= j``.
    """
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.numel() > 1 and bool((times[1:] >= times[:-1]).any()):
        raise ValueError("times must be strictly decreasing (the order of the backward process)")
    same_as_end = indices == indices[-1:]
    # j* = 1 + the last k where indices differ from the end (0 when they never do)
    differs = (~same_as_end).to(torch.int64)
    k = torch.arange(indices.shape[0], device=indices.device).unsqueeze(1)
    last_diff = torch.where(differs.bool(), k, torch.full_like(k, -1)).amax(0)
    return times.to(indices.device)[last_diff + 1]


@torch.no_grad()
def entropy_proxy(
    empirical: EmpiricalDenoiser,
    times: Sequence[float] | Tensor,
    *,
    num_samples: int = 4000,
    seed: int = 0,
    batch_size: int = 1024,
) -> dict[str, Tensor | float]:
    """Monte-Carlo excess entropy density ``f^e(t) = s^sep(t) - s^e(t)`` of the training set, per OU time.

    ``s^e = -(1/d) E log P_t^e(x)`` over ``x = e^{-t} a^nu + sqrt(Delta_t) xi`` (``nu`` uniform), and
    ``s^sep = (log n)/d + 1/2 + 1/2 log(2 pi Delta_t)``. Subtracting the exactly known
    ``E log N(x; e^{-t} a^nu, Delta_t I) = -d/2 - d/2 log(2 pi Delta_t)`` from both (a control variate) gives
    the same expectation as the paper's estimator with far less variance:

        ``f^e(t) = (1/d) E[ log n + log P_t^e(x) - log N(x; e^{-t} a^nu, Delta_t I) ] >= 0``.

    ``log P_t^e`` comes from :func:`diffuse_feat.ou.ou_log_density` (sigma-space density plus the ``d t``
    Jacobian). Returns ``{"times", "f_e", "f_e_se", "alpha"}`` with ``alpha = (log n)/d``, the limit at large ``t``.
    """
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if bool((times <= 0).any()):
        raise ValueError("entropy_proxy needs OU times > 0")
    points = empirical.points
    n, d = points.shape
    g = torch.Generator(device=points.device).manual_seed(seed)
    f_e, f_se = [], []
    for t in times.tolist():
        delta = ou_delta(t)
        values = []
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            nu = torch.randint(n, (b,), generator=g, device=points.device)
            a = points[nu].to(torch.float64)
            x = ou_forward(a, t, generator=g)
            log_self = -0.5 * (x - math.exp(-t) * a).square().sum(1) / delta - 0.5 * d * math.log(2 * math.pi * delta)
            log_p = ou_log_density(empirical, x.reshape(b, *empirical.data_shape), t)
            values.append((math.log(n) + log_p - log_self) / d)
        v = torch.cat(values)
        f_e.append(v.mean())
        f_se.append(v.std() / math.sqrt(v.numel()) if v.numel() > 1 else torch.zeros((), dtype=torch.float64))
    return {"times": times, "f_e": torch.stack(f_e).cpu(), "f_e_se": torch.stack(f_se).cpu(), "alpha": math.log(n) / d}


def last_crossing(times: Sequence[float] | Tensor, values: Sequence[float] | Tensor, level: float) -> float:
    """The largest ``t`` at which the piecewise-linear curve ``values(times)`` crosses ``level`` (``nan`` if never).

    The last crossing is the robust one for the regime curves: ``phi`` and ``phi_C`` fall from 1 and ``f^e/alpha``
    rises from 0 as ``t`` grows, and noise near their flat ends never reaches the level again.
    """
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    order = torch.argsort(t)
    t, v = t[order], v[order] - level
    ok = torch.isfinite(v)
    t, v = t[ok], v[ok]
    for i in range(len(t) - 2, -1, -1):
        a, b = float(v[i]), float(v[i + 1])
        if a == 0 and b == 0:
            return float(t[i + 1])
        if a * b <= 0:
            return float(t[i] + (t[i + 1] - t[i]) * a / (a - b))
    return math.nan


def estimate_speciation_time(times, phi, level: float = SPECIATION_LEVEL) -> float:
    """The paper's numerical ``t_S``: where the cloning curve ``phi(t)`` crosses 0.775."""
    return last_crossing(times, phi, level)


def estimate_collapse_time(times, values, level: float) -> float:
    """``t_C`` where a collapse curve crosses ``level``: ``phi_C`` at :data:`COLLAPSE_PHI_LEVEL`, or
    ``f^e / alpha`` at :data:`COLLAPSE_ENTROPY_LEVEL`."""
    return last_crossing(times, values, level)
