"""The input Jacobian ``J = dD(x; sigma)/dx`` of a denoiser, and how close it is to the Gaussian one.

The Gaussian (Wiener) denoiser has the same Jacobian at every ``x``:
``J_G(sigma) = U diag(lambda / (lambda + sigma^2)) U^T`` (``U, lambda``: principal components and variances
of the training data). Li, Dai, Qu (2024, App. H) compare the singular vectors of a learned denoiser's
Jacobian with ``U``: aligned at high sigma, image-adapted ("GAHB") at intermediate sigma.

* :func:`denoiser_jacobian` — the full ``[d, d]`` matrix with ``torch.func.jacrev`` (small ``d``).
* :func:`jacobian_top_singular` — the top-``k`` singular triplets by randomized block Krylov iteration
  (Musco & Musco 2015) with batched JVPs and VJPs: ``(k + oversample) (2 num_iters + 1)`` probe products
  instead of ``d`` backward passes.
* :func:`gaussian_jacobian_distance` — ``||J - J_G||_F / ||J_G||_F`` with ``||A||_F^2 = E_v ||A v||^2``
  over Rademacher probes ``v`` (one batched JVP; ``J_G v`` and ``||J_G||_F`` in closed form).
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
    """Eval mode for modules (dropout off, no batch statistics), weights out of autograd's graph (we only
    differentiate in ``x``; recording weight gradients makes JVPs/VJPs ~20% slower) and autocast off;
    restores the mode and the ``requires_grad`` flags after."""
    is_module = isinstance(denoiser, nn.Module)
    was_training = is_module and denoiser.training
    frozen = [p for p in denoiser.parameters() if p.requires_grad] if is_module else []
    if is_module:
        denoiser.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        if is_module:
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


def _jacobian_products(f: Callable[[Tensor], Tensor], v0: Tensor) -> tuple[Callable[[Tensor], Tensor], ...]:
    """Batched products with the Jacobian ``J`` of ``f`` at ``v0``: ``(T -> T J^T, C -> C J)`` on rows ``[m, d]``.

    One forward pass is kept and reused by every product. ``c -> J^T c`` (a VJP) is linear, so its own VJP
    is ``t -> J t``: reverse mode twice gives the JVP two to three times faster than forward mode
    (``vmap`` over ``torch.func.jvp``) on the U-Net, and the second graph is also built once.
    """
    out, vjp_fn = torch.func.vjp(f, v0)
    _, jvp_fn = torch.func.vjp(lambda c: vjp_fn(c)[0], torch.zeros_like(out))
    jmul = torch.func.vmap(lambda t: jvp_fn(t)[0])
    jtmul = torch.func.vmap(lambda c: vjp_fn(c)[0])
    return (lambda t: jmul(t).detach()), (lambda c: jtmul(c).detach())


def _extend_basis(basis: Tensor, block: Tensor, generator: torch.Generator) -> Tensor:
    """Orthonormal columns spanning the part of ``block [d, b]`` orthogonal to the orthonormal ``basis [d, m]``.

    Gram-Schmidt twice ("twice is enough" for orthogonality to rounding). Directions the block lacks
    (``J`` of low rank, or an exhausted Krylov space) are replaced by random ones, so the result stays an
    orthonormal extension of ``basis``; returns at most ``d - m`` columns.
    """
    d, m = basis.shape
    block = block[:, : d - m]

    def project(a: Tensor) -> Tensor:
        for _ in range(2):
            a = a - basis @ (basis.T @ a)
        return a

    scale = block.norm(dim=0).amax().clamp_min(torch.finfo(block.dtype).tiny)
    q, r = torch.linalg.qr(project(block))
    lost = r.diagonal().abs() < 1e-5 * scale
    if bool(lost.any()):
        fresh = torch.randn(d, int(lost.sum()), generator=generator, dtype=block.dtype).to(block.device)
        q, _ = torch.linalg.qr(project(torch.cat([q[:, ~lost], fresh], dim=1)))
    return q


def jacobian_top_singular(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    k: int = 8,
    *,
    oversample: int = 4,
    num_iters: int = 8,
    tol: float | None = 1e-2,
    seed: int = 0,
    method: Literal["auto", "full", "randomized"] = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` singular triplets ``J ~ U diag(S) V^T`` of the Jacobian at one point.

    ``"randomized"``: randomized block Krylov (Musco & Musco 2015; block Golub-Kahan-Lanczos with full
    reorthogonalisation) with blocks of ``b = k + oversample`` probes: ``Q_0 = orth(Omega)``, then
    ``num_iters`` times ``Q_{i+1} = orth(J J^T Q_i  minus span(Q_0..Q_i))``. The products ``J^T Q_i`` made on
    the way are exactly ``B^T = J^T Q``, so the Rayleigh-Ritz step (SVD of ``Q^T J``) costs no more
    products: at most ``b (num_iters + 1)`` VJPs and ``b num_iters`` JVPs, instead of ``d`` backward passes.
    Unlike subspace iteration, which keeps only the last block, the whole Krylov space is used, and
    it converges on the flat top spectra of learned denoisers (see ``benchmarks/jacobian_topk.py``).
    The estimates only grow towards the true values as the space grows, so iteration stops early once a
    block moves no top-``k`` value by more than ``tol`` (relative; ``None``: always ``num_iters``). A
    heuristic, not a bound; on the benchmark's learned U-Net the last change always exceeded the remaining
    error.
    ``"full"``: the SVD of :func:`denoiser_jacobian` (exact). ``"auto"`` picks whichever needs fewer probe
    products. Returns ``(U [d, k], S [k], V [d, k])``, values descending.
    """
    point = _point(x)
    d = point.numel()
    width = min(d, k + oversample)
    if method == "full" or (method == "auto" and d <= width * (2 * num_iters + 1)):
        u, s, vh = torch.linalg.svd(denoiser_jacobian(denoiser, x, sigma).double(), full_matrices=False)
        return u[:, :k].float(), s[:k].float(), vh[:k].T.float()
    if method not in ("auto", "randomized"):
        raise ValueError(f"method must be 'auto', 'full' or 'randomized', got {method!r}")
    if width < k:
        raise ValueError(f"k={k} exceeds the dimension d={d}")
    f = _flat_map(denoiser, point, sigma)
    v0 = point.reshape(-1)
    g = torch.Generator().manual_seed(int(seed))
    with jacobian_mode(denoiser, point.device.type):
        jmul, jtmul = _jacobian_products(f, v0)
        q = _extend_basis(v0.new_zeros(d, 0), torch.randn(d, width, generator=g).to(v0), g)  # left (output) space
        blocks, jt_blocks = [q], [jtmul(q.T.contiguous()).T]  # Q_i and J^T Q_i
        previous = None
        for _ in range(num_iters):
            basis = torch.cat(blocks, dim=1)
            if basis.shape[1] == d:
                break
            if tol is not None:  # singular values of Q^T J so far (a [m, d] matrix with m << d: cheap)
                current = torch.linalg.svdvals(torch.cat(jt_blocks, dim=1).double())[:k]
                if previous is not None and bool(((current - previous).abs() <= tol * current.abs()).all()):
                    break
                previous = current
            q = _extend_basis(basis, jmul(jt_blocks[-1].T.contiguous()).T, g)
            blocks.append(q)
            jt_blocks.append(jtmul(q.T.contiguous()).T)
    basis, jt_basis = torch.cat(blocks, dim=1).double(), torch.cat(jt_blocks, dim=1).double()
    u_small, s, vh = torch.linalg.svd(jt_basis.T, full_matrices=False)  # Q^T J = u_small diag(s) vh
    u = basis @ u_small
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
        jv = _jacobian_products(f, point.reshape(-1))[0](probes).double()
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
