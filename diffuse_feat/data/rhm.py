"""The Random Hierarchy Model (Cagnetta et al. 2024; Sclocchi, Favero, Wyart 2024): hierarchical data with an
exact parser and an exact (belief-propagation) denoiser.

A class ``y`` (level 0) is rewritten ``L`` times: every symbol of level ``l`` picks one of its ``m`` production
rules uniformly and is replaced by that rule's ordered ``s``-tuple of level-``l+1`` symbols (children of node
``i`` sit at ``s i .. s i + s - 1``). Rules are drawn per level *without replacement* from the ``v^s`` possible
tuples (``n_c m`` tuples at the root, ``v m`` below), so no tuple is shared by two symbols of a level, the grammar
is unambiguous and the leaves determine the whole tree. Inputs are the ``d = s^L`` leaves.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from ..capabilities import LatentTrees, OracleLabels
from ..denoisers.rhm_bp import RHMBeliefPropagation
from ..errors import ConfigError
from .base import TensorDataModule

__all__ = ["RHMGrammar", "RHMDataModule"]

_MAX_TUPLES = 2**26  # rules are drawn from a permutation of all v^s tuples


class RHMGrammar:
    """The rules of one RHM and what they determine: sampling, encoding and exact parsing.

    ``rules[0]`` is ``[n_c, m, s]``, ``rules[l]`` (``l = 1..L-1``) is ``[v, m, s]``; ``rules[l][a, j]`` is the
    ``j``-th tuple that a level-``l`` symbol ``a`` rewrites into. Trees are lists of ``[N, s^l]`` long tensors
    for ``l = 0..L`` (root first; ``-1`` marks a node the parser could not derive).
    """

    def __init__(self, rules: Sequence[Tensor], v: int):
        self.rules = [torch.as_tensor(r, dtype=torch.long) for r in rules]
        self.v, self.L = int(v), len(self.rules)
        self.num_classes, self.m, self.s = (int(n) for n in self.rules[0].shape)
        self._powers = self.v ** torch.arange(self.s - 1, -1, -1)  # first tuple position is most significant
        # parent_of[l][code] = the level-l symbol owning the tuple with that code, or -1
        self.parent_of = []
        for r in self.rules:
            codes = (r * self._powers).sum(-1)  # [V_l, m]
            if codes.unique().numel() != codes.numel():
                raise ValueError("RHM rules share a tuple within a level; the grammar would be ambiguous")
            table = torch.full((self.v**self.s,), -1, dtype=torch.long)
            table[codes.reshape(-1)] = torch.arange(r.shape[0]).repeat_interleave(self.m)
            self.parent_of.append(table)

    @classmethod
    def random(cls, v: int, n_c: int, m: int, s: int, L: int, seed: int = 0) -> RHMGrammar:
        """Rules drawn without replacement per level from the ``v^s`` tuples (a ``torch.Generator`` seeded by
        ``seed``)."""
        g = torch.Generator().manual_seed(seed)
        total = v**s
        rules = []
        for level in range(L):
            owners = n_c if level == 0 else v
            codes = torch.randperm(total, generator=g)[: owners * m].reshape(owners, m)
            digits = (codes.unsqueeze(-1) // v ** torch.arange(s - 1, -1, -1)) % v
            rules.append(digits)
        return cls(rules, v)

    @property
    def num_leaves(self) -> int:
        return self.s**self.L

    def sample_trees(self, num: int, generator: torch.Generator | None = None,
                     classes: Tensor | None = None) -> list[Tensor]:
        """``num`` derivations from the uniform class prior (or the given ``classes``), uniform rule choices."""
        y = torch.randint(self.num_classes, (num,), generator=generator) if classes is None else classes.long()
        trees = [y.reshape(-1, 1)]
        for level in range(self.L):
            choice = torch.randint(self.m, trees[level].shape, generator=generator)
            children = self.rules[level][trees[level], choice]  # [N, s^l, s]
            trees.append(children.reshape(trees[level].shape[0], -1))
        return trees

    def parse(self, symbols: Tensor) -> list[Tensor]:
        """Exact bottom-up parse of leaf strings ``[N, s^L]``: the unique tree, with ``-1`` at every node whose
        subtree is not grammatical (so ``trees[0][:, 0] == -1`` means the string is not a valid RHM datum)."""
        if symbols.ndim != 2 or symbols.shape[1] != self.num_leaves:
            raise ValueError(f"parse expects leaf symbols [N, {self.num_leaves}], got {list(symbols.shape)}")
        device = symbols.device
        trees: list[Tensor] = [None] * (self.L + 1)  # type: ignore[list-item]
        trees[self.L] = symbols.long()
        for level in reversed(range(self.L)):
            children = trees[level + 1].reshape(symbols.shape[0], self.s**level, self.s)
            broken = (children < 0).any(-1)
            codes = (children.clamp_min(0) * self._powers.to(device)).sum(-1)
            parents = self.parent_of[level].to(device)[codes]
            trees[level] = torch.where(broken, torch.full_like(parents, -1), parents)
        return trees


class RHMDataModule(TensorDataModule, LatentTrees, OracleLabels):
    """RHM data as one-hot strings ``[v, s^L]`` (channels first), labels = the root class.

    Each symbol ``a`` is encoded as ``scale (e_a - center / v)``: with the defaults the one-hot minus its mean
    ``1/v``, so every entry has mean ~0 and standard deviation :attr:`data_std` ``= scale sqrt(v-1) / v``
    (set the diffusion model's ``sigma_data`` to it). BP's Gaussian leaf evidence uses the same encoding.

    Args:
        v, n_c, m, s, L: vocabulary, classes, rules per symbol, branching, depth (``m v <= v^s``, ``m n_c <= v^s``).
        rule_seed: seed of the rules (the grammar); ``seed`` draws the samples and the train/val split.
        pool_size: derivations sampled *with replacement* from the generative process before the split.

    Ground truth: :attr:`grammar` and :attr:`rules`, :meth:`train_trees` / :meth:`val_trees` (all levels),
    :meth:`parse` (an exact parser of one-hot or argmax strings), :meth:`oracle_labels`, :meth:`bp_denoiser`
    (the exact posterior) and :meth:`eps_star` (the mean-field reconstruction threshold).
    """

    def __init__(
        self,
        v: int = 8,
        n_c: int = 8,
        m: int = 2,
        s: int = 2,
        L: int = 3,
        scale: float = 1.0,
        center: bool = True,
        rule_seed: int = 0,
        pool_size: int = 10000,
        batch_size: int = 128,
        n_train: int | None = None,
        n_val: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed, num_workers=num_workers)
        for name, value, low in (("v", v, 2), ("n_c", n_c, 1), ("m", m, 1), ("s", s, 2), ("L", L, 1)):
            if value < low:
                raise ConfigError(f"data.{name} must be >= {low}, got {value}")
        if m * max(v, n_c) > v**s:
            raise ConfigError(
                f"data.m={m} is too large: each level needs m * {max(v, n_c)} distinct tuples but only v^s = {v**s} "
                f"exist; lower m (at most {v**s // max(v, n_c)}) or raise v or s"
            )
        if v**s > _MAX_TUPLES:
            raise ConfigError(f"v^s = {v**s} tuples is too many to draw rules from; lower data.v or data.s")
        if scale <= 0:
            raise ConfigError(f"data.scale must be > 0, got {scale}")
        self.v, self.n_c, self.m, self.s, self.L = v, n_c, m, s, L
        self.scale, self.center, self.rule_seed, self.pool_size = float(scale), bool(center), rule_seed, pool_size
        self.grammar = RHMGrammar.random(v, n_c, m, s, L, seed=rule_seed)
        self.data_shape = (v, s**L)
        self.num_classes = n_c

    # ----- the generative process ---------------------------------------------------------------------------------
    @property
    def rules(self) -> list[Tensor]:
        return self.grammar.rules

    @property
    def data_std(self) -> float:
        """Per-entry standard deviation of the encoding when symbols are uniform: ``scale sqrt(v - 1) / v``."""
        return self.scale * (self.v - 1) ** 0.5 / self.v

    def encode(self, symbols: Tensor) -> Tensor:
        """Leaf symbols ``[N, s^L]`` -> float32 ``[N, v, s^L]``: ``scale (one_hot - center / v)``."""
        onehot = torch.nn.functional.one_hot(symbols.long(), self.v).transpose(1, 2).float()
        return self.scale * (onehot - (1.0 / self.v if self.center else 0.0))

    def symbols(self, x: Tensor) -> Tensor:
        """The leaf string of an encoded (possibly noisy or generated) input: argmax over the ``v`` channels."""
        return x.reshape(x.shape[0], self.v, -1).argmax(1)

    def sample_trees(self, num: int, seed: int) -> list[Tensor]:
        """``num`` fresh derivations from the generative process (levels root to leaves)."""
        return self.grammar.sample_trees(num, torch.Generator().manual_seed(seed))

    def build(self) -> tuple[Tensor, Tensor]:
        trees = self.sample_trees(self.pool_size, seed=self.seed * 1_000_003 + 17)
        return self.encode(trees[-1]), trees[0][:, 0].clone()

    # ----- ground truth -------------------------------------------------------------------------------------------
    def parse(self, x: Tensor) -> list[Tensor]:
        """Exact parse of encoded inputs ``[N, v, s^L]`` (argmax per position) or symbols ``[N, s^L]``; ``-1``
        marks nodes whose subtree breaks the grammar."""
        return self.grammar.parse(x if x.ndim == 2 and not x.is_floating_point() else self.symbols(x))

    def oracle_labels(self, x: Tensor) -> Tensor:
        """The class of each input by exact parsing; ``-1`` where the string is not grammatical."""
        return self.parse(x)[0][:, 0]

    @functools.cached_property
    def _trees(self) -> tuple[list[Tensor], list[Tensor]]:
        return self.parse(self.train_tensor()), self.parse(self.val_tensor())

    def train_trees(self) -> list[Tensor]:
        """The latent tree of every training sample: ``[n_train, s^l]`` for ``l = 0..L`` (root first)."""
        return self._trees[0]

    def val_trees(self) -> list[Tensor]:
        return self._trees[1]

    def bp_denoiser(self, max_chunk_bytes: int = 2**28) -> RHMBeliefPropagation:
        """The exact posterior of this grammar (BP), a denoiser for Gaussian noise on this encoding."""
        return RHMBeliefPropagation(self.rules, self.v, scale=self.scale, center=self.center,
                                    max_chunk_bytes=max_chunk_bytes)

    def eps_star(self) -> dict[str, float]:
        """Mean-field threshold of the soft-epsilon process for these ``(v, m, s)``: ``eps_star``, ``x_star``,
        ``lam``."""
        from ..diagnostics.hierarchy import mean_field_threshold

        return mean_field_threshold(self.v, self.m, self.s)

    def describe(self) -> dict:
        return {**super().describe(), "v": self.v, "n_c": self.n_c, "m": self.m, "s": self.s, "L": self.L,
                "rule_seed": self.rule_seed}
