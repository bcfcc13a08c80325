"""The cloning experiment of Biroli et al. (2024) for any denoiser, and its exact finite-n predictions.

Run a batch backward (OU time, :mod:`diffuse_feat.ou`) from ``x(T) ~ N(0, I)`` to a clone time ``t``, copy each
state, finish both copies to ``t_min`` with independent noise, and measure

* ``phi(t)``: the probability that both copies end in the same class (read by a *labeler*: the data's oracle,
  a trained classifier, or the label of the nearest training point);
* ``phi_C(t)``: the probability that both end on the same training point (collapse).

All clone times share one *trunk*: the trunk's own continuation is the first copy of every pair, and each clone
time adds one branch, so ``K`` clone times cost one trajectory plus ``K`` tails rather than ``2K`` full runs; all
copies advance together in one batch. Pairs at different clone times are correlated through the trunk, which
leaves each ``phi(t)`` unbiased.

With the exact empirical score the backward process is the exact reversal of the forward one from the training
set, so (note section 5, with ``w_mu`` the posterior weights) ``phi_C(t) = E_{y ~ P_t^e}[sum_mu w_mu^2]`` and
``phi(t) = E[sum_c (sum_{mu in c} w_mu)^2]``: :func:`exact_cloning_predictions` computes both by forward Monte
Carlo, the sharpest test of a backward sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..capabilities import OracleLabels
from ..denoisers.base import Denoiser
from ..denoisers.empirical import EmpiricalDenoiser
from ..errors import MissingGroundTruth
from ..ou import Method, merge_times, ou_denoise, ou_sigma, ou_step, ou_time_grid
from ..samplers import StepHook
from .collapse import NearestTrainTracker
from .neighbors import nearest_neighbors

__all__ = [
    "Labeler",
    "classifier_labeler",
    "nearest_train_labeler",
    "choose_labeler",
    "ClonePairs",
    "run_clones",
    "agreement",
    "cloning_experiment",
    "exact_cloning_predictions",
]

#: clean samples ``[B, *data_shape]`` -> class indices ``[B]``
Labeler = Callable[[Tensor], Tensor]


def classifier_labeler(classifier: torch.nn.Module, sigma: float = 0.0, batch_size: int = 4096) -> Labeler:
    """Labels from a classifier called as ``classifier(x, sigma) -> logits`` (a ``ClassificationModule``)."""

    @torch.no_grad()
    def label(x: Tensor) -> Tensor:
        device = next(classifier.parameters()).device
        out = [classifier(chunk.to(device).float(), sigma).argmax(1) for chunk in x.split(batch_size)]
        return torch.cat(out).to(x.device)

    return label


def nearest_train_labeler(train: Tensor, labels: Tensor) -> Labeler:
    """The label of the nearest training point (exact for samples of the exact empirical score)."""

    def label(x: Tensor) -> Tensor:
        _, idx = nearest_neighbors(x, train.to(x.device))
        return labels.to(x.device)[idx[:, 0]]

    return label


def choose_labeler(datamodule, choice: str = "auto", load_classifier: Callable[[], torch.nn.Module] | None = None,
                   classifier_sigma: float = 0.0, name: str = "Regimes") -> Labeler:
    """``x -> class`` as ``choice`` says: ``"auto"``/``"oracle"`` the data's ``oracle_labels`` when it has them,
    ``"nearest_train"`` the label of the nearest training point, else the classifier ``load_classifier()`` returns
    (``None``: there is none, and the error names the two ways out)."""
    if choice in ("auto", "oracle") and isinstance(datamodule, OracleLabels):
        return datamodule.oracle_labels
    if choice == "nearest_train":
        return nearest_train_labeler(datamodule.train_tensor(), datamodule.train_labels())
    if load_classifier is not None:
        return classifier_labeler(load_classifier(), classifier_sigma)
    raise MissingGroundTruth(
        f"{name} needs a labeler for phi(t), but {type(datamodule).__name__} has no `oracle_labels` (OracleLabels); "
        "pass classifier_checkpoint=<path to a ClassificationModule .ckpt> "
        "(e.g. trained with configs/digits/classifier.yaml), or labeler='nearest_train'"
    )


@dataclass
class ClonePairs:
    """``clone_times`` ``[K]`` increasing; ``trunk_end`` ``[B, *shape]`` (first copy of every pair);
    ``branch_ends`` ``[K, B, *shape]`` (second copies); ends in data units (see :func:`run_clones`)."""

    clone_times: Tensor
    trunk_end: Tensor
    branch_ends: Tensor
    t_end: float


def _denoise_chunked(denoiser: Denoiser, x: Tensor, t: float, max_batch: int | None) -> Tensor:
    if max_batch is None or x.shape[0] <= max_batch:
        return ou_denoise(denoiser, x, t)
    return torch.cat([ou_denoise(denoiser, chunk, t) for chunk in x.split(max_batch)])


@torch.no_grad()
def run_clones(
    denoiser: Denoiser,
    data_shape: Sequence[int],
    clone_times: Sequence[float] | Tensor,
    num_pairs: int,
    *,
    times: Tensor | None = None,
    method: Method = "sde",
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
    trunk_hook: StepHook | None = None,
    denoise_final: bool = True,
    max_batch: int | None = None,
) -> ClonePairs:
    """Clone pairs at every clone time. ``times`` is the OU grid (default :func:`ou_time_grid`); clone times are
    merged into it. The ends are ``E[a | x(t_min)]`` with ``denoise_final`` (a noiseless last step), else
    ``x(t_min) e^{t_min}``; both are in data units. ``trunk_hook`` sees the trunk only, at every grid time.
    Randomness: one generator seeded by ``seed`` on ``device`` (same result for the same ``(seed, num_pairs)``).
    """
    clone = torch.sort(torch.as_tensor(clone_times, dtype=torch.float64).reshape(-1)).values
    if clone.numel() == 0 or num_pairs < 1:
        raise ValueError("run_clones needs at least one clone time and num_pairs >= 1")
    if bool((clone[1:] - clone[:-1] < 1e-9).any()):
        raise ValueError(f"clone times must be distinct, got {clone.tolist()}")
    grid = merge_times(ou_time_grid() if times is None else times, clone)
    t_list = grid.tolist()
    if float(clone.min()) <= t_list[-1] or float(clone.max()) > t_list[0]:
        raise ValueError(f"clone times must lie in ({t_list[-1]:.4g}, {t_list[0]:.4g}], got {clone.tolist()}")
    node_of = {int(torch.argmin((grid - c).abs())): k for k, c in enumerate(clone.tolist())}
    g = torch.Generator(device=device or "cpu").manual_seed(seed)
    x = torch.randn((num_pairs, *data_shape), generator=g, device=device, dtype=dtype)
    created: list[int] = []  # clone-time index of each branch, in order of creation (decreasing t)
    for i, t in enumerate(t_list):
        if i in node_of:
            x = torch.cat([x, x[:num_pairs]])
            created.append(node_of[i])
        last = i == len(t_list) - 1
        if last and trunk_hook is None and not denoise_final:
            break
        denoised = _denoise_chunked(denoiser, x, t, max_batch) if not last or denoise_final else None
        if trunk_hook is not None:
            trunk_den = denoised[:num_pairs] if denoised is not None else ou_denoise(denoiser, x[:num_pairs], t)
            trunk_hook({"i": i, "x": x[:num_pairs], "t": t, "denoised": trunk_den})
        if last:
            break
        x = ou_step(x, denoised.to(dtype), t, t_list[i + 1], method, g)
    t_end = t_list[-1]
    ends = denoised.to(dtype) if denoise_final else x * math.exp(t_end)
    ends = ends.reshape(len(created) + 1, num_pairs, *data_shape)
    branch = torch.empty_like(ends[1:])
    branch[torch.as_tensor(created, device=branch.device)] = ends[1:]
    return ClonePairs(clone, ends[0], branch, t_end)


def agreement(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Fraction of equal entries along the last axis and its binomial standard error: ``(p, sqrt(p(1-p)/B))``."""
    same = (a == b).to(torch.float64)
    p = same.mean(-1)
    return p, (p * (1 - p) / same.shape[-1]).sqrt()


@torch.no_grad()
def cloning_experiment(
    denoiser: Denoiser,
    data_shape: Sequence[int],
    clone_times: Sequence[float] | Tensor,
    *,
    labeler: Labeler | None = None,
    train: Tensor | None = None,
    num_pairs: int = 1000,
    times: Tensor | None = None,
    method: Method = "sde",
    seed: int = 0,
    device=None,
    track_below: float = math.inf,
    max_batch: int | None = None,
    extra_labelers: dict[str, Labeler] | None = None,
) -> dict[str, Tensor | float]:
    """``phi(t)`` (with a ``labeler``) and ``phi_C(t)`` plus the collapse times ``t_hat_C`` of the trunk
    trajectories (with ``train``, the training set ``[n, *data_shape]``; tracked at grid times ``<= track_below``).

    Returns ``clone_times`` (increasing) and, as available, ``phi``, ``phi_se``, ``phi_collapse``,
    ``phi_collapse_se``, ``t_hat_C`` (per trajectory), ``end_distance`` (per trajectory: distance of the trunk's
    end to its nearest training point), ``t_end`` and ``num_pairs``. ``extra_labelers`` read the very same pairs
    (``phi_<name>``, ``phi_<name>_se``) and the trunk ends (``trunk_labels_<name>``, and ``trunk_labels`` for
    ``labeler``), so labelers can be compared on one set of samples.
    """
    if labeler is None and train is None:
        raise ValueError("cloning_experiment needs a labeler (for phi) or the training set (for phi_C)")
    tracker = NearestTrainTracker(train, t_max=track_below) if train is not None else None
    pairs = run_clones(denoiser, data_shape, clone_times, num_pairs, times=times, method=method, seed=seed,
                       device=device, trunk_hook=tracker, max_batch=max_batch)
    k = pairs.clone_times.numel()
    out: dict[str, Tensor | float] = {"clone_times": pairs.clone_times, "t_end": pairs.t_end, "num_pairs": num_pairs}
    flat_branches = pairs.branch_ends.reshape(k * num_pairs, *data_shape)
    named = {"": labeler} if labeler is not None else {}
    named.update({f"_{name}": fn for name, fn in (extra_labelers or {}).items()})
    for suffix, fn in named.items():
        trunk_labels = fn(pairs.trunk_end)
        branch_labels = fn(flat_branches).reshape(k, num_pairs)
        out[f"phi{suffix}"], out[f"phi{suffix}_se"] = (v.cpu() for v in agreement(branch_labels,
                                                                                   trunk_labels.unsqueeze(0)))
        out[f"trunk_labels{suffix}"] = trunk_labels.cpu()
    if train is not None:
        train = train.to(pairs.trunk_end.device)
        trunk_dist, trunk_nn = (v[:, 0] for v in nearest_neighbors(pairs.trunk_end, train))
        branch_nn = nearest_neighbors(flat_branches, train)[1][:, 0].reshape(k, num_pairs)
        out["phi_collapse"], out["phi_collapse_se"] = (v.cpu() for v in agreement(branch_nn, trunk_nn.unsqueeze(0)))
        out["t_hat_C"] = tracker.last_change_time.cpu()
        out["end_distance"] = trunk_dist.cpu()
    return out


@torch.no_grad()
def exact_cloning_predictions(
    empirical: EmpiricalDenoiser,
    times: Sequence[float] | Tensor,
    *,
    labels: Tensor | None = None,
    num_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Tensor]:
    """``phi_C(t) = E[sum_mu w_mu(y, t)^2]`` and (with ``labels`` ``[n]``) ``phi(t) = E[sum_c (sum_{mu in c} w_mu)^2]``
    over ``y ~ P_t^e``, by forward Monte Carlo (no dynamics): what the exact empirical score's cloning gives.

    Sampled in sigma-space (``x e^{t} = a^nu + sigma(t) z``); the weights are those of the OU posterior.
    Returns ``times``, ``phi_collapse``, ``phi_collapse_se`` and, with labels, ``phi``, ``phi_se``.
    """
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    points = empirical.points
    n = points.shape[0]
    g = torch.Generator(device=points.device).manual_seed(seed)
    if labels is not None:
        labels = labels.to(points.device).long()
        num_classes = int(labels.max()) + 1
    keys = ("phi_collapse", "phi") if labels is not None else ("phi_collapse",)
    results = {k: ([], []) for k in keys}
    for t in times.tolist():
        sigma = ou_sigma(t)
        samples = {k: [] for k in keys}
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            nu = torch.randint(n, (b,), generator=g, device=points.device)
            y = points[nu] + sigma * torch.randn(points[nu].shape, generator=g, device=points.device,
                                                 dtype=points.dtype)
            w = empirical.posterior_weights(y, sigma)
            samples["phi_collapse"].append(w.square().sum(1))
            if labels is not None:
                per_class = torch.zeros(b, num_classes, dtype=w.dtype, device=w.device).index_add_(1, labels, w)
                samples["phi"].append(per_class.square().sum(1))
        for k in keys:
            v = torch.cat(samples[k]).to(torch.float64)
            results[k][0].append(v.mean())
            results[k][1].append(v.std() / math.sqrt(v.numel()) if v.numel() > 1 else v.new_zeros(()))
    out = {"times": times}
    for k, (mean, se) in results.items():
        out[k], out[f"{k}_se"] = torch.stack(mean).cpu(), torch.stack(se).cpu()
    return out
