"""Exact belief propagation (BP) on the Random Hierarchy Model: the Bayes-optimal denoiser of hierarchical data.

Every noise process here acts on each leaf independently, ``q(x_t | x_0) = prod_i q(x_t,i | x_0,i)``, so the
posterior over the whole derivation (class, latent levels, leaves) is a tree graphical model whose factors are
the production rules, and sum-product BP on it is exact (Sclocchi, Favero, Wyart 2024, section 2). Levels are
numbered root = 0 to leaves = L; level ``l`` has ``s^l`` nodes with values in ``V_0 = n_c`` (classes) or
``V_l = v``. Messages are ``[B, s^l, V_l]`` tensors in float64, normalised at every level (so L = 10 products
do not underflow), computed for the whole batch and every node of a level at once; Python loops run over
levels and tuple positions only.

* upward: ``nu_up_p(b) ∝ sum_j prod_k nu_up_{c_k}(R_l[b, j, k])``, leaves ``nu_up_i(a) ∝ q(x_t,i | a)``;
* downward: ``nu_down_root = 1/n_c``,
  ``nu_down_{c_k}(a) ∝ sum_b nu_down_p(b) sum_{j: R_l[b,j,k] = a} prod_{k' != k} nu_up_{c_k'}(R_l[b, j, k'])``;
* marginals ``P(node = a | x_t) ∝ nu_up(a) nu_down(a)``;
* exact posterior samples, top-down: the class from the root marginal, then for each node of value ``b`` a rule
  ``j ~ prod_k nu_up_{c_k}(R_l[b, j, k])`` whose tuple gives the children (never node-by-node marginals, which
  would break the grammar).

Leaf evidence for the four processes of the paper (``eps`` is each process's noise level):

=============  ======================================  ==================================================
process        forward noise                           leaf likelihood ``nu_up_i(a)``
=============  ======================================  ==================================================
``soft``       none: the evidence itself is noisy      ``(1 - eps) delta(a, x_0,i) + eps / v``
``d3pm``       ``x_t ~ Cat((1-eps) e_x0 + eps/v)``     ``(1 - eps) delta(a, x_t,i) + eps / v``
``masking``    each leaf hidden with probability eps   ``delta(a, x_0,i)``, or ``1/v`` where masked
``gaussian``   ``x = enc(x_0) + sigma z``              ``softmax_a(scale x[a, i] / sigma^2)``
=============  ======================================  ==================================================

For ``gaussian`` the encoding is ``enc(a) = scale (e_a - center/v)`` (any constant offset cancels), and
``eps = 1 - alpha_bar`` of the variance-preserving form corresponds to ``sigma = scale sqrt(eps / (1 - eps))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import einops
import torch
from torch import Tensor

from .base import ExactDenoiser

__all__ = [
    "RHMBeliefPropagation",
    "BPResult",
    "NoiseProcessName",
    "soft_evidence",
    "d3pm_evidence",
    "masking_evidence",
    "gaussian_evidence",
    "noisy_leaf_evidence",
    "sigma_of_gaussian_eps",
    "gaussian_eps_of_sigma",
]

NoiseProcessName = Literal["soft", "d3pm", "masking", "gaussian"]
PROCESSES = ("soft", "d3pm", "masking", "gaussian")


# ----- leaf evidence -----------------------------------------------------------------------------------------------
def soft_evidence(symbols: Tensor, eps: float, v: int) -> Tensor:
    """Soft-epsilon process: ``(1 - eps) delta(a, x_i) + eps / v``, ``[B, d]`` symbols -> ``[B, d, v]`` (float64)."""
    onehot = torch.nn.functional.one_hot(symbols.long(), v).to(torch.float64)
    return (1.0 - eps) * onehot + eps / v


def d3pm_evidence(noisy_symbols: Tensor, eps: float, v: int) -> Tensor:
    """Uniform discrete (D3PM) noise with ``alpha_bar = 1 - eps``: the likelihood of the observed ``x_t``,
    ``(1 - eps) delta(a, x_t,i) + eps / v`` (the same form as :func:`soft_evidence`, evaluated at ``x_t``)."""
    return soft_evidence(noisy_symbols, eps, v)


def masking_evidence(symbols: Tensor, masked: Tensor, v: int) -> Tensor:
    """Absorbing noise: ``delta(a, x_0,i)`` where the leaf is visible, uniform where ``masked`` is True."""
    evidence = torch.nn.functional.one_hot(symbols.long(), v).to(torch.float64)
    return torch.where(masked.unsqueeze(-1), torch.full_like(evidence, 1.0 / v), evidence)


def gaussian_evidence(x: Tensor, sigma: Tensor | float, scale: float = 1.0) -> Tensor:
    """Gaussian noise on the encoding ``scale (e_a - c)``: ``softmax_a(scale x[b, a, i] / sigma_b^2)``.

    ``x`` is ``[B, v, d]`` (channels first, like the data); returns ``[B, d, v]`` (float64). ``sigma = 0`` is the
    limit: all mass on the largest channel. ``sigma = inf`` gives uniform evidence.
    """
    x = x.to(torch.float64)
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
    # sigma^2 floored so sigma = 0 stays finite; the softmax of ~1e200 logits is the argmax one-hot
    logits = scale * x / sigma.square().clamp_min(1e-200)
    return torch.softmax(logits.transpose(1, 2), dim=-1)


def sigma_of_gaussian_eps(eps: Tensor | float, scale: float = 1.0) -> Tensor:
    """``sigma = scale sqrt(eps / (1 - eps))``: the sigma-space level of ``x_t = sqrt(1-eps) e + sqrt(eps) z``."""
    eps = torch.as_tensor(eps, dtype=torch.float64)
    return scale * torch.sqrt(eps / (1.0 - eps))


def gaussian_eps_of_sigma(sigma: Tensor | float, scale: float = 1.0) -> Tensor:
    """Inverse of :func:`sigma_of_gaussian_eps`: ``eps = 1 - alpha_bar = sigma^2 / (sigma^2 + scale^2)``."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return sigma.square() / (sigma.square() + scale**2)


def noisy_leaf_evidence(
    process: NoiseProcessName, symbols: Tensor, eps: float, v: int, generator: torch.Generator | None = None
) -> Tensor:
    """Noise clean leaves ``symbols [B, d]`` at level ``eps`` with ``process`` and return the leaf likelihoods
    ``[B, d, v]`` of what was observed (see the module table). Randomness comes from ``generator`` (CPU)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1] for process {process!r}, got {eps}")
    device = symbols.device
    if process == "soft":
        return soft_evidence(symbols, eps, v)
    if process == "d3pm":
        keep = torch.rand(symbols.shape, generator=generator, dtype=torch.float64) >= eps
        resampled = torch.randint(v, symbols.shape, generator=generator)
        noisy = torch.where(keep.to(device), symbols, resampled.to(device))
        return d3pm_evidence(noisy, eps, v)
    if process == "masking":
        masked = torch.rand(symbols.shape, generator=generator, dtype=torch.float64) < eps
        return masking_evidence(symbols, masked.to(device), v)
    if process == "gaussian":
        # x_t = sqrt(1-eps) e + sqrt(eps) z in the VP form: logits (1-eps)/eps delta + sqrt((1-eps)/eps) z
        z = torch.randn((*symbols.shape, v), generator=generator, dtype=torch.float64).to(device)
        if eps >= 1.0:
            return torch.full_like(z, 1.0 / v)
        onehot = torch.nn.functional.one_hot(symbols.long(), v).to(torch.float64)
        snr = (1.0 - eps) / max(eps, 1e-200)
        return torch.softmax(snr * onehot + math.sqrt(snr) * z, dim=-1)
    raise ValueError(f"unknown noise process {process!r}; choose one of {PROCESSES}")


# ----- belief propagation ------------------------------------------------------------------------------------------
class BPResult(NamedTuple):
    """What one BP run returns. Lists are indexed by level, root (0) to leaves (L)."""

    root: Tensor  # [B, n_c]: P(class | x_t)
    marginals: list[Tensor] | None  # [B, s^l, V_l]: P(node = a | x_t)
    sample: list[Tensor] | None  # [B, s^l] long: one exact posterior tree per input


def _normalize_(t: Tensor) -> Tensor:
    """Normalise ``[V, N]`` messages over the values (dim 0), in place; a column with no mass (evidence impossible
    under the grammar, e.g. an ungrammatical string at sigma = 0) becomes uniform."""
    total = t.sum(0, keepdim=True)
    empty = total == 0
    t.div_(total)
    if bool(empty.any()):
        t.copy_(torch.where(empty, torch.full_like(t[:1], 1.0 / t.shape[0]), t))
    return t


def _inverse_cdf(weights: Tensor, u: Tensor) -> Tensor:
    """Index ``j`` drawn with probability ``weights[j, :] / sum_j`` per column, given uniforms ``u`` ``[N]``."""
    cdf = weights.cumsum(0)
    return (cdf <= u * cdf[-1]).sum(0).clamp_max(weights.shape[0] - 1)


class RHMBeliefPropagation(ExactDenoiser):
    """Exact posterior of a Random Hierarchy Model given per-leaf evidence, and its Gaussian-noise denoiser.

    Args:
        rules: ``L`` long tensors; ``rules[0]`` is ``[n_c, m, s]`` (class -> tuples of level-1 symbols),
            ``rules[l]`` is ``[v, m, s]``. Tuples must be distinct within a level (the grammar is unambiguous).
        v: vocabulary size.
        scale, center: the data encoding ``scale (e_a - center / v)`` of a symbol ``a`` (see ``RHMDataModule``).
        max_chunk_bytes: working-memory budget; the batch is processed in chunks of trees that fit. The default
            (64 MiB) keeps the working set near the CPU caches, which matters more than the number of chunks.

    As a framework denoiser, ``bp(x, sigma)`` takes ``x = enc(x_0) + sigma z`` of shape ``[B, v, s^L]`` and
    returns ``E[enc(x_0) | x] = scale (P(leaf = a | x) - center / v)``, so samplers and diagnostics accept it.

    Layout: a level's messages are one ``[V_l, s^l B]`` matrix whose columns are ordered *child index first*:
    node ``p = sum_i k_i s^(l-i)`` of tree ``b`` (``k_i`` the branch taken at depth ``i``) sits in column
    ``sum_i k_i s^(i-1) B + b``. Then the ``k``-th children of all parents are the contiguous block ``[:, k, :]`` of
    the ``[V, s, N]`` view, and looking a rule's symbols up is a copy of whole rows (``index_select``): no
    per-level transposes and about ten times faster than gathering along the last axis.
    """

    def __init__(self, rules: Sequence[Tensor], v: int, scale: float = 1.0, center: bool = True,
                 max_chunk_bytes: int = 2**26):
        rules = [torch.as_tensor(r, dtype=torch.long) for r in rules]
        if not rules or any(r.ndim != 3 for r in rules):
            raise ValueError("rules must be a non-empty list of [symbols, m, s] tensors, one per level")
        m, s = rules[0].shape[1:]
        if any(tuple(r.shape[1:]) != (m, s) for r in rules) or any(r.shape[0] != v for r in rules[1:]):
            raise ValueError(f"rules[0] must be [n_c, m, s] and rules[1:] [v={v}, m, s] with the same m and s")
        if any(int(r.min()) < 0 or int(r.max()) >= v for r in rules):
            raise ValueError(f"rule tuples must hold symbols in 0..{v - 1}")
        self.v, self.m, self.s, self.L = int(v), int(m), int(s), len(rules)
        self.num_classes = int(rules[0].shape[0])
        super().__init__((self.v, self.s**self.L))
        self.scale, self.center, self.max_chunk_bytes = float(scale), bool(center), int(max_chunk_bytes)
        for level, r in enumerate(rules):
            self.register_buffer(f"rules_{level}", r.contiguous(), persistent=False)

    @property
    def rules(self) -> list[Tensor]:
        return [getattr(self, f"rules_{level}") for level in range(self.L)]

    @property
    def num_leaves(self) -> int:
        return self.s**self.L

    def vocab(self, level: int) -> int:
        """Number of values a level-``level`` node takes: ``n_c`` at the root, ``v`` below."""
        return self.num_classes if level == 0 else self.v

    # ----- layout conversions -------------------------------------------------------------------------------------
    def _layout_pattern(self, level: int, symbols: bool) -> tuple[str, str, dict[str, int]]:
        """einops patterns of the tree order ``b (d0 .. d_{l-1}) [v]`` and the BP column order
        ``[v] (d_{l-1} .. d0 b)``: a node's index written in base ``s`` (``d0`` most significant), digits reversed,
        the tree index last."""
        digits = [f"d{i}" for i in range(level)]
        v = " v" if symbols else ""
        tree = f"b ({' '.join(digits)}){v}"
        columns = f"{v.strip()} ({' '.join([*reversed(digits), 'b'])})".strip()
        return tree, columns, dict.fromkeys(digits, self.s)

    def to_layout(self, t: Tensor, level: int) -> Tensor:
        """``[B, s^l, V]`` (or ``[B, s^l]``) in tree order -> ``[V, s^l B]`` (``[s^l B]``) in the BP column order."""
        tree, columns, sizes = self._layout_pattern(level, t.ndim == 3)
        return einops.rearrange(t, f"{tree} -> {columns}", **sizes)

    def from_layout(self, t: Tensor, level: int, batch: int) -> Tensor:
        """Inverse of :meth:`to_layout`: ``[V, s^l B]`` -> ``[B, s^l, V]`` (or ``[s^l B]`` -> ``[B, s^l]``)."""
        tree, columns, sizes = self._layout_pattern(level, t.ndim == 2)
        return einops.rearrange(t, f"{columns} -> {tree}", b=batch, **sizes)

    # ----- the passes, on ``[V, N]`` message matrices (every tree of the chunk and every node of a level) ---------
    def upward(self, leaf_evidence: Tensor) -> list[Tensor]:
        """Normalised upward messages ``[V_l, s^l B]`` (BP layout) for ``l = 0..L`` from leaf likelihoods
        ``[B, s^L, v]``: ``nu_up_p(b) ∝ sum_j prod_k nu_up_{c_k}(R[b, j, k])``, a loop over the ``m`` rules."""
        up: list[Tensor] = [None] * (self.L + 1)  # type: ignore[list-item]
        up[self.L] = _normalize_(self.to_layout(leaf_evidence.to(torch.float64), self.L).contiguous())
        for level in reversed(range(self.L)):
            child, rules = up[level + 1].view(self.v, self.s, -1), self.rules[level]
            total = child.new_zeros(rules.shape[0], child.shape[2])
            for j in range(self.m):
                product = child[:, 0].index_select(0, rules[:, j, 0])
                for k in range(1, self.s - 1):
                    product.mul_(child[:, k].index_select(0, rules[:, j, k]))
                total.addcmul_(product, child[:, -1].index_select(0, rules[:, j, -1]))
            up[level] = _normalize_(total)
        return up

    def downward(self, up: list[Tensor]) -> list[Tensor]:
        """Normalised downward messages (BP layout); the root's is the uniform class prior, and
        ``nu_down_{c_k}(a) ∝ sum_b nu_down_p(b) sum_{j: R[b,j,k]=a} prod_{k' != k} nu_up_{c_k'}(R[b, j, k'])``."""
        down = [torch.full_like(up[0], 1.0 / self.num_classes)]
        for level in range(self.L):
            child, rules = up[level + 1].view(self.v, self.s, -1), self.rules[level]
            out = torch.zeros_like(child)  # [v, s, N]
            for j in range(self.m):
                factors = [child[:, k].index_select(0, rules[:, j, k]) for k in range(self.s)]  # each [V_l, N]
                # products over the other children from prefix/suffix products (no division by a zero message)
                prefix = [down[level]]
                for k in range(self.s - 1):
                    prefix.append(prefix[-1] * factors[k])
                suffix = None
                for k in reversed(range(self.s)):
                    out[:, k].index_add_(0, rules[:, j, k], prefix[k] if suffix is None else prefix[k] * suffix)
                    suffix = factors[k] if suffix is None else suffix * factors[k]
            down.append(_normalize_(out.view(self.v, -1)))
        return down

    def sample_trees(self, up: list[Tensor], uniforms: list[Tensor]) -> list[Tensor]:
        """Exact posterior trees, top-down: the class from ``up[0]`` (times the uniform prior), then for every node
        of value ``b`` a rule ``j ~ prod_k nu_up_{c_k}(R[b, j, k])``, whose tuple gives the children.

        ``uniforms`` (from :meth:`random_uniforms`) holds ``[B, 1]`` for the class, then ``[B, s^l]`` for the rule
        of every level-``l`` node, ``l = 0..L-1``. Returns ``[B, s^l]`` long tensors for ``l = 0..L``.
        """
        batch = uniforms[0].shape[0]
        values = _inverse_cdf(up[0], uniforms[0].reshape(-1))  # [B]: one class per tree
        tree = [values.reshape(batch, 1)]
        for level in range(self.L):
            child = up[level + 1].view(self.v, self.s, -1)
            tuples = self.rules[level][values].permute(2, 1, 0)  # [s, m, N]: the rules of each node's value
            weight = child[:, 0].gather(0, tuples[0])
            for k in range(1, self.s):
                weight = weight * child[:, k].gather(0, tuples[k])
            j = _inverse_cdf(weight, self.to_layout(uniforms[level + 1], level))  # [N]
            values = tuples.gather(1, j.expand(self.s, 1, -1)).reshape(-1)  # child k of column n at k N + n
            tree.append(self.from_layout(values, level + 1, batch))
        return tree

    # ----- the public entry point ---------------------------------------------------------------------------------
    def chunk_size(self) -> int:
        """Trees per chunk: the stored messages of all levels (up, down, marginals) plus the working copies of the
        largest level fit ``max_chunk_bytes``."""
        per_tree = 8 * self.v * self.num_leaves * (3 * 2 + 2 * self.s)
        return max(1, self.max_chunk_bytes // per_tree)

    def random_uniforms(self, batch: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """The uniforms :meth:`sample_trees` consumes, drawn for the whole batch (so chunking never changes them)."""
        shapes = [1] + [self.s**level for level in range(self.L)]
        return [torch.rand(batch, n, generator=generator, dtype=torch.float64) for n in shapes]

    @torch.no_grad()
    def run(self, leaf_evidence: Tensor, *, marginals: bool = False, sample: bool = False,
            generator: torch.Generator | None = None) -> BPResult:
        """BP on leaf likelihoods ``[B, s^L, v]``: the class posterior, optionally marginals at every level and
        one exact posterior tree per input (randomness from ``generator``; identical whatever the chunk size)."""
        if tuple(leaf_evidence.shape[1:]) != (self.num_leaves, self.v):
            raise ValueError(f"leaf evidence must be [batch, {self.num_leaves}, {self.v}], "
                             f"got {list(leaf_evidence.shape)}")
        batch, device = leaf_evidence.shape[0], leaf_evidence.device
        uniforms = [u.to(device) for u in self.random_uniforms(batch, generator)] if sample else None
        roots, margs, trees = [], [], []
        step = self.chunk_size()
        for start in range(0, batch, step):
            stop = min(start + step, batch)
            up = self.upward(leaf_evidence[start:stop])
            roots.append(up[0].T)
            if marginals:
                down = self.downward(up)
                margs.append([self.from_layout(_normalize_(a * b), level, stop - start)
                              for level, (a, b) in enumerate(zip(up, down, strict=True))])
            if sample:
                trees.append(self.sample_trees(up, [u[start:stop] for u in uniforms]))
        by_level = lambda chunks: [torch.cat(parts) for parts in zip(*chunks, strict=True)]  # noqa: E731
        return BPResult(torch.cat(roots), by_level(margs) if marginals else None, by_level(trees) if sample else None)

    def leaf_evidence_from_x(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Leaf likelihoods of a sigma-space observation ``x = enc(x_0) + sigma z`` of shape ``[B, v, s^L]``."""
        return gaussian_evidence(x.reshape(x.shape[0], self.v, self.num_leaves), sigma, self.scale)

    def encode(self, probabilities: Tensor) -> Tensor:
        """``[B, s^L, v]`` leaf probabilities (or one-hots) -> the data encoding ``[B, v, s^L]``."""
        return self.scale * (probabilities.transpose(1, 2) - (1.0 / self.v if self.center else 0.0))

    def denoise_flat(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``E[enc(x_0) | x]``: the leaf marginals of BP with Gaussian evidence, in the data encoding."""
        leaf = self.run(self.leaf_evidence_from_x(x, sigma), marginals=True).marginals[-1]
        return self.encode(leaf).reshape(x.shape[0], -1)

    @torch.no_grad()
    def posterior_sample(self, x: Tensor, sigma: Tensor | float,
                         generator: torch.Generator | None = None) -> list[Tensor]:
        """One exact sample of the whole tree given ``x = enc(x_0) + sigma z`` (levels root to leaves)."""
        return self.run(self.leaf_evidence_from_x(x, sigma), sample=True, generator=generator).sample
