"""Time-resolved forward–backward reconstruction (Sclocchi, Favero, Wyart 2024) and its mean-field theory.

Forward–backward at noise level ``eps`` (or ``sigma``): noise a clean datum ``x_0``, denoise back to ``x_hat_0``
and ask what survived. With the exact (BP) denoiser ``x_hat_0`` is one exact posterior sample
``p(x_0 | x_t)``; for a learned model it is the end of a reverse-diffusion run from ``x_t``.

* ``p_class``: ``P(class(x_hat_0) = class(x_0))``. For BP the Rao–Blackwellised estimator
  ``E[P(root = y | x_t)]`` is used (same mean, much lower variance).
* ``p_unchanged[l]``: the fraction of level-``l`` symbols equal in the trees of ``x_hat_0`` and ``x_0``
  (``l = 0`` class ... ``l = L`` leaves); a learned model's ``x_hat_0`` is read by exact parsing, and a node whose
  subtree is not grammatical counts as changed.
* images: class preserved according to a classifier, and the normalised change of its standardised hidden
  activations at every depth, ``||a(x_hat_0) - a(x_0)||^2 / (||a(x_hat_0)|| ||a(x_0)||)``.

Mean-field theory of the soft-epsilon process (section 3.2 of the paper note): an upward message keeps the form
"mass ``x`` on the true symbol, ``(1-x)/(v-1)`` on each other"; one level up

    x' = F(x) = [x^s + (m-1) w] / [x^s + (m V - 1) w],     w = (1 - x^s) / (v^s - 1),

with ``V`` the parent alphabet (``v``, or ``n_c`` at the root), leaves ``x_L = 1 - eps + eps/v`` and
``P_class ~ F^L(x_L)``. The unstable fixed point ``x*`` of ``F`` (``V = v``) gives the threshold
``eps* = (1 - x*) / (1 - 1/v)``; near it deviations grow by ``lambda = F'(x*)`` per level, so the class curves of
all depths cross at ``eps*`` and collapse against ``z = (eps - eps*) lambda^L``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..denoisers.base import Denoiser
from ..denoisers.rhm_bp import NoiseProcessName, RHMBeliefPropagation, noisy_leaf_evidence
from ..samplers import SamplerName, SeededNoise, forward_backward

__all__ = [
    "mean_field_map",
    "mean_field_map_derivative",
    "mean_field_class_curve",
    "mean_field_threshold",
    "large_v_threshold",
    "tree_agreement",
    "bp_forward_backward",
    "bp_gaussian_forward_backward",
    "learned_forward_backward",
    "image_forward_backward",
    "classifier_read_out",
    "normalized_change",
    "channel_stats",
    "crossing_point",
    "level_crossing",
]


# ----- mean-field theory -------------------------------------------------------------------------------------------
def mean_field_map(x: Tensor | float, v: int, m: int, s: int, parent_vocab: int | None = None) -> Tensor:
    """``F(x) = [x^s + (m-1) w] / [x^s + (m V - 1) w]`` with ``w = (1 - x^s) / (v^s - 1)``, ``V = parent_vocab``
    (default ``v``); float64, elementwise."""
    x = torch.as_tensor(x, dtype=torch.float64)
    vocab = v if parent_vocab is None else parent_vocab
    xs = x**s
    w = (1.0 - xs) / (v**s - 1)
    return (xs + (m - 1) * w) / (xs + (m * vocab - 1) * w)


def mean_field_map_derivative(x: Tensor | float, v: int, m: int, s: int) -> Tensor:
    """``F'(x)`` for ``V = v`` (quotient rule in ``u = x^s``)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    c = 1.0 / (v**s - 1)
    u = x**s
    num, den = u + (m - 1) * c * (1 - u), u + (m * v - 1) * c * (1 - u)
    dnum, dden = 1 - (m - 1) * c, 1 - (m * v - 1) * c
    return (dnum * den - num * dden) / den.square() * s * x ** (s - 1)


def mean_field_class_curve(eps: Tensor | Sequence[float], v: int, m: int, s: int, L: int,
                           n_c: int | None = None) -> Tensor:
    """Mean-field ``P_class(eps, L) = F_root(F^{L-1}(1 - eps + eps / v))`` (the last step into ``n_c`` classes)."""
    x = 1.0 - torch.as_tensor(eps, dtype=torch.float64) * (1.0 - 1.0 / v)
    for _ in range(L - 1):
        x = mean_field_map(x, v, m, s)
    return mean_field_map(x, v, m, s, parent_vocab=v if n_c is None else n_c)


def mean_field_threshold(v: int, m: int, s: int, tol: float = 1e-13) -> dict[str, float]:
    """The unstable fixed point ``x*`` of ``F`` between ``1/v`` and ``1``, found by bisection on ``F(x) - x``,
    with ``eps_star = (1 - x*) / (1 - 1/v)`` and ``lam = F'(x*)``. Without an interior fixed point (``s f >= 1``:
    no reconstructible phase) every value is NaN."""
    grid = torch.linspace(1.0 / v, 1.0, 20001, dtype=torch.float64)[1:-1]
    gap = mean_field_map(grid, v, m, s) - grid
    change = torch.nonzero((gap[:-1] < 0) & (gap[1:] >= 0)).flatten()
    if change.numel() == 0:
        return {"eps_star": math.nan, "x_star": math.nan, "lam": math.nan}
    lo, hi = float(grid[change[0]]), float(grid[change[0] + 1])
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if float(mean_field_map(mid, v, m, s)) < mid:
            lo = mid
        else:
            hi = mid
    x_star = 0.5 * (lo + hi)
    return {"eps_star": (1.0 - x_star) / (1.0 - 1.0 / v), "x_star": x_star,
            "lam": float(mean_field_map_derivative(x_star, v, m, s))}


def large_v_threshold(v: int, m: int, s: int) -> float:
    """Large-``v`` limit at fixed ``f = m / v^{s-1}``: ``eps* = 1 - x*`` with ``x^{s-1} = f (1 + x + ... + x^{s-1})``;
    for ``s = 2`` this is ``(1 - 2 f) / (1 - f)``. NaN when ``s f >= 1``."""
    f = m / v ** (s - 1)
    if s * f >= 1:
        return math.nan
    lo, hi = 0.0, 1.0  # g(x) = x^{s-1} - f sum_k x^k is < 0 near 0 and > 0 at 1 (s f < 1)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid ** (s - 1) - f * sum(mid**k for k in range(s)) < 0:
            lo = mid
        else:
            hi = mid
    return 1.0 - 0.5 * (lo + hi)


# ----- tree comparisons --------------------------------------------------------------------------------------------
def tree_agreement(trees_hat: Sequence[Tensor], trees: Sequence[Tensor]) -> dict[str, object]:
    """``p_class`` (root equal), ``p_unchanged`` (per level, root first) and ``p_valid`` (fraction of ``x_hat`` whose
    root parsed, i.e. grammatical strings). ``-1`` nodes of ``trees_hat`` never match."""
    unchanged = [float((a == b).double().mean()) for a, b in zip(trees_hat, trees, strict=True)]
    return {"p_class": unchanged[0], "p_unchanged": unchanged, "p_valid": float((trees_hat[0] >= 0).double().mean())}


def _true_value_probability(marginals: Sequence[Tensor], trees: Sequence[Tensor]) -> list[float]:
    """Rao–Blackwellised ``p_unchanged``: the posterior mass of the true value, averaged over nodes."""
    return [float(p.gather(-1, t.unsqueeze(-1).to(p.device)).mean()) for p, t in zip(marginals, trees, strict=True)]


def bp_forward_backward(
    bp: RHMBeliefPropagation,
    trees: Sequence[Tensor],
    eps_grid: Sequence[float],
    *,
    process: NoiseProcessName = "soft",
    seed: int = 0,
    marginals: bool = False,
) -> dict[str, list]:
    """The exact forward–backward curves of the RHM for ``process`` on the trees ``trees`` (levels root first).

    For each ``eps``: noise the leaves, run BP, draw one exact posterior tree. Returns ``eps``, ``p_class``
    (Rao–Blackwellised root marginal at the true class), ``p_class_sampled`` (the sampled class), ``p_unchanged``
    (``[eps][level]`` from the posterior sample) and, with ``marginals=True``, ``p_unchanged_marginal``
    (Rao–Blackwellised per level; needs the downward pass too).
    """
    g = torch.Generator().manual_seed(seed)
    device = bp.rules[0].device
    trees = [t.to(device) for t in trees]
    out: dict[str, list] = {"eps": [float(e) for e in eps_grid], "p_class": [], "p_class_sampled": [],
                            "p_unchanged": []}
    if marginals:
        out["p_unchanged_marginal"] = []
    y = trees[0][:, 0]
    for eps in eps_grid:
        evidence = noisy_leaf_evidence(process, trees[-1], float(eps), bp.v, generator=g)
        result = bp.run(evidence, marginals=marginals, sample=True, generator=g)
        out["p_class"].append(float(result.root.gather(1, y[:, None]).mean()))
        agreement = tree_agreement(result.sample, trees)
        out["p_class_sampled"].append(agreement["p_class"])
        out["p_unchanged"].append(agreement["p_unchanged"])
        if marginals:
            out["p_unchanged_marginal"].append(_true_value_probability(result.marginals, trees))
    return out


def bp_gaussian_forward_backward(
    bp: RHMBeliefPropagation, x0: Tensor, trees: Sequence[Tensor], sigmas: Sequence[float], noise: Tensor,
    *, seed: int = 0,
) -> dict[str, list]:
    """Exact forward–backward in sigma-space: ``x = x0 + sigma noise`` (Gaussian noise on the encoding), then one
    exact posterior tree. Pass the same ``noise`` a learned model sees (``SeededNoise(seeds).randn_like(x0)``, which
    is what :func:`learned_forward_backward` draws first) to compare both on identical noisy inputs."""
    g = torch.Generator().manual_seed(seed)
    trees = [t.to(x0.device) for t in trees]
    y = trees[0][:, 0]
    out: dict[str, list] = {"sigma": [float(s) for s in sigmas], "p_class": [], "p_class_sampled": [],
                            "p_unchanged": [], "p_valid": []}
    for sigma in sigmas:
        x = x0.double() + float(sigma) * noise.double()
        result = bp.run(bp.leaf_evidence_from_x(x, float(sigma)), sample=True, generator=g)
        out["p_class"].append(float(result.root.gather(1, y[:, None]).mean()))
        agreement = tree_agreement(result.sample, trees)
        out["p_class_sampled"].append(agreement["p_class"])
        out["p_unchanged"].append(agreement["p_unchanged"])
        out["p_valid"].append(agreement["p_valid"])
    return out


def learned_forward_backward(
    denoiser: Denoiser,
    x0: Tensor,
    trees: Sequence[Tensor],
    sigmas: Sequence[float],
    parse: Callable[[Tensor], list[Tensor]],
    *,
    seeds: Sequence[int],
    sampler: SamplerName = "stochastic",
    num_steps: int = 32,
    sigma_min: float = 0.002,
) -> dict[str, list]:
    """Forward–backward with any denoiser: ``x_hat_0 = forward_backward(denoiser, x0, sigma)`` (noise from
    ``SeededNoise(seeds)``, the same at every sigma), then exact parsing of ``x_hat_0`` against ``trees``.

    The default ancestral (``stochastic``) sampler draws approximately from ``p(x_0 | x_t)`` like BP does; the
    probability-flow ODE samplers would map each ``x_t`` to one deterministic point instead.
    Returns ``sigma``, ``p_class``, ``p_unchanged`` (``[sigma][level]``) and ``p_valid``. ``sigma_min``: where the
    reverse run stops before its last step to 0.
    """
    trees = [t.to(x0.device) for t in trees]
    out: dict[str, list] = {"sigma": [float(s) for s in sigmas], "p_class": [], "p_unchanged": [], "p_valid": []}
    for sigma in sigmas:
        x_hat = forward_backward(denoiser, x0, float(sigma), num_steps=num_steps, sampler=sampler,
                                 noise=SeededNoise(seeds), sigma_min=sigma_min)
        agreement = tree_agreement(parse(x_hat), trees)
        for key in ("p_class", "p_unchanged", "p_valid"):
            out[key].append(agreement[key])
    return out


# ----- images ------------------------------------------------------------------------------------------------------
def channel_stats(activations: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of ``[B, C, ...]`` activations over the batch and any spatial axes."""
    dims = [0, *range(2, activations.ndim)]
    mean = activations.mean(dim=dims, keepdim=True)
    std = activations.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return mean, std


def normalized_change(before: Tensor, after: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """Per sample ``||a' - b'||^2 / (||a'|| ||b'||)`` of activations standardised per channel (``(a - mean) / std``;
    no standardisation when ``mean`` is None). 0 for identical activations; ~2 for independent standardised ones."""
    if mean is not None:
        before, after = (before - mean) / std, (after - mean) / std
    b, a = before.flatten(1).double(), after.flatten(1).double()
    return (a - b).square().sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def classifier_read_out(classifier: Callable, sigma: float = 0.0) -> Callable[[Tensor], tuple[Tensor, list[Tensor]]]:
    """``x -> (logits, [hidden activations at every depth])`` of a classifier ``classifier(x, sigma) -> logits``
    (a ``ClassificationModule``): its backbone's ``hidden_features(x, sigma)`` when it has one, else the outputs
    of the backbone's ``blocks`` (the residual blocks of ``MLP``) captured with forward hooks."""
    backbone = getattr(classifier, "backbone", None)

    @torch.no_grad()
    def read_out(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if hasattr(backbone, "hidden_features"):
            return classifier(x, sigma), list(backbone.hidden_features(x, torch.full((x.shape[0],), sigma,
                                                                                      device=x.device)))
        acts: list[Tensor] = []
        blocks = getattr(backbone, "blocks", [])
        handles = [b.register_forward_hook(lambda _m, _i, out: acts.append(out.detach())) for b in blocks]
        try:
            logits = classifier(x, sigma)
        finally:
            for h in handles:
                h.remove()
        return logits, acts

    return read_out


def image_forward_backward(
    denoiser: Denoiser,
    x0: Tensor,
    sigmas: Sequence[float],
    read_out: Callable[[Tensor], tuple[Tensor, list[Tensor]]] | None,
    *,
    seeds: Sequence[int],
    sampler: SamplerName = "stochastic",
    num_steps: int = 32,
    depth_names: Sequence[str] | None = None,
    sigma_min: float = 0.002,
) -> dict[str, object]:
    """Forward–backward on images read by a classifier: ``read_out(x) -> (logits, [activations at each depth])``.

    ``p_class``: fraction of probes whose predicted class of ``x_hat_0`` equals that of ``x_0`` (the classifier's
    prediction on both, not the label). ``change[name]``: mean normalised change per depth, standardised with the
    clean probes' per-channel statistics; depth ``pixels`` is the input itself and ``logits`` the last.
    ``change_class_kept[name]``: the same mean over the probes whose predicted class was kept only (NaN where none
    was), which separates a depth's change within a class from the large change of the probes that switched class.
    Without a classifier (``read_out=None``) only ``pixels`` is measured and both class keys are absent.
    """
    logits0, acts0 = read_out(x0) if read_out is not None else (None, [])
    layers0 = [x0, *acts0] + ([logits0] if logits0 is not None else [])
    names = ["pixels", *(depth_names or [f"depth{i + 1}" for i in range(len(acts0))])]
    names += ["logits"] if logits0 is not None else []
    if len(names) != len(layers0):
        raise ValueError(f"depth_names has {len(names) - 2} names but read_out returned {len(acts0)} activations")
    stats = [channel_stats(a) for a in layers0]
    out: dict[str, object] = {"sigma": [float(s) for s in sigmas], "depths": names, "change": {n: [] for n in names}}
    if logits0 is not None:
        out["p_class"], out["change_class_kept"] = [], {n: [] for n in names}
    for sigma in sigmas:
        x_hat = forward_backward(denoiser, x0, float(sigma), num_steps=num_steps, sampler=sampler,
                                 noise=SeededNoise(seeds), sigma_min=sigma_min)
        logits, acts = read_out(x_hat) if read_out is not None else (None, [])
        kept = logits.argmax(1) == logits0.argmax(1) if logits is not None else None
        if kept is not None:
            out["p_class"].append(float(kept.double().mean()))
        layers = [x_hat, *acts] + ([logits] if logits is not None else [])
        for name, before, after, (mean, std) in zip(names, layers0, layers, stats, strict=True):
            change = normalized_change(before, after, mean, std)
            out["change"][name].append(float(change.mean()))
            if kept is not None:
                out["change_class_kept"][name].append(float(change[kept].mean()) if kept.any() else math.nan)
    return out


# ----- reading curves ----------------------------------------------------------------------------------------------
def crossing_point(x: Sequence[float], y1: Sequence[float], y2: Sequence[float]) -> float:
    """The first ``x`` where ``y1 - y2`` changes sign, linearly interpolated (NaN if it never does)."""
    diff = [a - b for a, b in zip(y1, y2, strict=True)]
    for i in range(len(diff) - 1):
        if diff[i] == 0:
            return float(x[i])
        if diff[i] * diff[i + 1] < 0:
            return float(x[i] + (x[i + 1] - x[i]) * diff[i] / (diff[i] - diff[i + 1]))
    return math.nan


def level_crossing(x: Sequence[float], y: Sequence[float], level: float, log_x: bool = False) -> float:
    """The first ``x`` where the curve ``y`` falls through ``level`` (interpolated, in ``log x`` if asked)."""
    xs = [math.log(v) if log_x else v for v in x]
    value = crossing_point(xs, y, [level] * len(y))
    return math.exp(value) if log_x and math.isfinite(value) else value
