"""The input Jacobian ``J = dD(x; sigma)/dx`` of a denoiser, and how close it is to the Gaussian one.

The Gaussian (Wiener) denoiser has the same Jacobian at every ``x``:
``J_G(sigma) = U diag(lambda / (lambda + sigma^2)) U^T`` (``U, lambda``: principal components and variances
of the training data). Li, Dai, Qu (2024, App. H) compare the singular vectors of a learned denoiser's
Jacobian with ``U``: aligned at high sigma, image-adapted ("GAHB") at intermediate sigma.

* :func:`denoiser_jacobian` — the full ``[d, d]`` matrix with ``torch.func.jacrev`` (small ``d``).
* :func:`jacobian_top_singular` — the top-``k`` singular triplets by randomized subspace iteration
  (Halko, Martinsson, Tropp 2011, Alg. 4.4) with batched JVPs and VJPs: ``(k + oversample) (2 num_iters + 2)``
  probe products instead of ``d`` backward passes.
* :func:`gaussian_jacobian_distance` — ``||J - J_G||_F / ||J_G||_F`` with ``||A||_F^2 = E_v ||A v||^2``
  over Rademacher probes ``v`` (one JVP per probe; ``J_G v`` and ``||J_G||_F`` in closed form).
* :func:`principal_alignment`, :func:`subspace_overlap` — ``|cos|`` between singular vectors and principal
  components, and how much of one ``k``-dimensional subspace the other captures.

Every function evaluates at one point ``x`` of shape ``data_shape`` (no batch dimension) and one sigma.
They take any callable ``D(x, sigma)`` and work in fp32 with autocast off and (for an
``nn.Module``) in eval mode, restoring the previous mode afterwards. ``torch.func`` transforms ignore
an enclosing ``torch.no_grad``, so they also run inside diagnostic callbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from ..denoisers.base import Denoiser
from ..denoisers.gaussian import GaussianDenoiser

__all__ = [
    "jacobian_mode",
    "denoiser_jacobian",
    "jacobian_top_singular",
    "gaussian_jacobian_distance",
    "gaussian_jacobian_spectrum",
    "principal_alignment",
    "subspace_overlap",
]


@contextlib.contextmanager
def jacobian_mode(denoiser: Denoiser, device_type: str) -> Iterator[None]:
    """Eval mode for modules (dropout off, no batch statistics) and autocast off; restores the mode after."""
    was_training = denoiser.training if isinstance(denoiser, nn.Module) else None
    if was_training is not None:
        denoiser.eval()
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        if was_training is not None:
            denoiser.train(was_training)


def _point(x: Tensor) -> Tensor:
    """One data point ``x [*data_shape]`` (no batch dimension) as a float32 batch of one."""
    return x.unsqueeze(0).float()


def _flat_map(denoiser: Denoiser, point: Tensor, sigma: float) -> Callable[[Tensor], Tensor]:
    """``v [d] -> D(v as one data point, sigma) [d]``: the map whose Jacobian we want."""
    shape = point.shape
    sig = torch.full((1,), float(sigma), device=point.device)
    return lambda v: denoiser(v.reshape(shape), sig).reshape(-1).float()


def denoiser_jacobian(denoiser: Denoiser, x: Tensor, sigma: float, *, chunk_size: int | None = None) -> Tensor:
    """The full Jacobian ``dD(x; sigma)/dx`` at one point, flattened: ``[d, d]`` (row ``i`` = output ``i``).

    Uses ``torch.func.jacrev`` (one forward, ``d`` batched backward passes; ``chunk_size`` bounds memory).
    """
    point = _point(x)
    f = _flat_map(denoiser, point, sigma)
    with jacobian_mode(denoiser, point.device.type):
        return torch.func.jacrev(f, chunk_size=chunk_size)(point.reshape(-1)).detach()


def _jvps(f: Callable[[Tensor], Tensor], v0: Tensor, tangents: Tensor) -> Tensor:
    """``J t`` for every row ``t`` of ``tangents`` ``[m, d]`` (the primal is computed once, tangents batched)."""
    return torch.func.vmap(lambda t: torch.func.jvp(f, (v0,), (t,))[1])(tangents)


def jacobian_top_singular(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    k: int = 8,
    *,
    oversample: int = 8,
    num_iters: int = 3,
    seed: int = 0,
    method: Literal["auto", "full", "randomized"] = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` singular triplets ``J ~ U diag(S) V^T`` of the Jacobian at one point.

    ``"randomized"``: subspace iteration on ``l = k + oversample`` probes without forming ``J``:
    ``Q = orth(J Omega)``, then ``num_iters`` times ``Q = orth(J orth(J^T Q))``, then the SVD of the small
    ``B = Q^T J`` (from VJPs). Singular values converge like ``(s_{l+1} / s_i)^(2 num_iters + 1)``; the cost
    is ``l (2 num_iters + 2)`` probe products (batched JVPs and VJPs) instead of ``d`` backward passes.
    ``"full"``: the SVD of :func:`denoiser_jacobian` (exact). ``"auto"`` picks whichever needs fewer probe
    products. Returns ``(U [d, k], S [k], V [d, k])``, values descending.
    """
    point = _point(x)
    d = point.numel()
    width = min(d, k + oversample)
    if method == "full" or (method == "auto" and d <= width * (2 * num_iters + 2)):
        u, s, vh = torch.linalg.svd(denoiser_jacobian(denoiser, x, sigma).double(), full_matrices=False)
        return u[:, :k].float(), s[:k].float(), vh[:k].T.float()
    if method not in ("auto", "randomized"):
        raise ValueError(f"method must be 'auto', 'full' or 'randomized', got {method!r}")
    f = _flat_map(denoiser, point, sigma)
    v0 = point.reshape(-1)
    g = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(width, d, generator=g).to(v0.device)
    with jacobian_mode(denoiser, point.device.type):
        _, vjp_fn = torch.func.vjp(f, v0)  # the forward pass is kept and reused by every VJP
        vjps = torch.func.vmap(lambda c: vjp_fn(c)[0])
        q = torch.linalg.qr(_jvps(f, v0, omega).detach().T).Q  # [d, l]
        for _ in range(num_iters):
            z = torch.linalg.qr(vjps(q.T.contiguous()).detach().T).Q  # orth(J^T Q)
            q = torch.linalg.qr(_jvps(f, v0, z.T.contiguous()).detach().T).Q  # orth(J Z)
        b = vjps(q.T.contiguous()).detach()  # rows: (J^T q_i)^T, i.e. B = Q^T J  [l, d]
    u_small, s, vh = torch.linalg.svd(b.double(), full_matrices=False)
    u = q.double() @ u_small
    return u[:, :k].float(), s[:k].float(), vh[:k].T.float()


def gaussian_jacobian_spectrum(gaussian: GaussianDenoiser, sigma: float) -> Tensor:
    """Singular values of ``J_G(sigma)``: ``lambda_i / (lambda_i + sigma^2)``, descending like ``gaussian.eigenvalues``
    (so entry ``i`` belongs to the column ``i`` of ``gaussian.eigenvectors``), float64."""
    return gaussian.shrinkage(torch.tensor([float(sigma)], dtype=torch.float64))[0]


def gaussian_jacobian_distance(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    gaussian: GaussianDenoiser,
    *,
    num_probes: int = 32,
    seed: int = 0,
) -> Tensor:
    """``||J_D(x) - J_G||_F / ||J_G||_F`` at one point, estimated with Rademacher probes ``v``.

    ``||A||_F^2 = E_v ||A v||^2`` for any ``v`` with independent unit-variance entries; Rademacher
    entries give the smallest variance. ``J_D v`` is a batched JVP, ``J_G v = U (shrink * U^T v)`` and
    ``||J_G||_F^2 = sum shrink^2`` are exact, so the estimate is exactly 0 when ``D = D_G``.
    """
    point = _point(x)
    d = point.numel()
    g = torch.Generator().manual_seed(int(seed))
    probes = (torch.randint(0, 2, (num_probes, d), generator=g) * 2 - 1).float().to(point.device)
    f = _flat_map(denoiser, point, sigma)
    with jacobian_mode(denoiser, point.device.type):
        jv = _jvps(f, point.reshape(-1), probes).detach().double()
    u = gaussian.eigenvectors.to(device=point.device, dtype=torch.float64)
    shrink = gaussian_jacobian_spectrum(gaussian, sigma).to(point.device)
    jgv = ((probes.double() @ u) * shrink) @ u.T
    frob_sq = (jv - jgv).square().sum(1).mean()
    return (frob_sq / shrink.square().sum().clamp_min(1e-300)).sqrt()


def principal_alignment(vectors: Tensor, components: Tensor) -> Tensor:
    """``|cos|`` between each column of ``vectors [d, k]`` and each column of ``components [d, m]``: ``[k, m]``."""
    a = vectors.to(torch.float64)
    b = components.to(device=a.device, dtype=torch.float64)
    a = a / a.norm(dim=0, keepdim=True).clamp_min(1e-300)
    b = b / b.norm(dim=0, keepdim=True).clamp_min(1e-300)
    return (a.T @ b).abs()


def subspace_overlap(vectors: Tensor, components: Tensor) -> Tensor:
    """``||P_B a_i||^2`` averaged over the orthonormal columns ``a_i`` of ``vectors [d, k]``, with ``P_B``
    the projector onto the span of ``components [d, m]`` (orthonormalised). 1: ``span A`` inside ``span B``;
    about ``m / d`` for random directions."""
    a = torch.linalg.qr(vectors.to(torch.float64)).Q
    b = torch.linalg.qr(components.to(device=a.device, dtype=torch.float64)).Q
    return (b.T @ a).square().sum() / a.shape[1]
