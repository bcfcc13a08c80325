"""A DDP-safe running mean per noise-level bucket (loss or accuracy vs sigma)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["BucketMean", "bucket_labels"]


def bucket_labels(edges: Sequence[float]) -> list[str]:
    """Readable names for the buckets ``(-inf, e0), [e0, e1), ..., [e_last, inf)`` of sigma."""
    edges = list(edges)
    if not edges:
        return ["all"]
    names = [f"sigma<{edges[0]:g}"]
    names += [f"sigma={lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return names + [f"sigma>={edges[-1]:g}"]


class BucketMean(Metric):
    """Mean of per-sample values grouped by which bucket their sigma falls in.

    ``update`` never syncs with the device (scatter-add into sums and counts); ``compute`` returns the
    sums and counts, summed across DDP ranks, and :meth:`means` turns them into per-bucket means.
    """

    full_state_update = False

    def __init__(self, edges: Sequence[float]):
        super().__init__()
        self.register_buffer("edges", torch.tensor(sorted(float(e) for e in edges)), persistent=False)
        n = len(edges) + 1
        self.add_state("sums", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor, sigma: Tensor) -> None:
        idx = torch.bucketize(sigma.detach().float(), self.edges.to(sigma.device), right=True)
        self.sums.scatter_add_(0, idx, values.detach().to(torch.float64))
        self.counts.scatter_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def compute(self) -> Tensor:
        """``[2, num_buckets]``: row 0 the sums, row 1 the counts (synchronised across DDP ranks)."""
        return torch.stack([self.sums, self.counts])

    @staticmethod
    def means(sums_counts: Tensor) -> Tensor:
        """Per-bucket means from :meth:`compute`'s output, NaN where a bucket saw nothing."""
        sums, counts = sums_counts
        return torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan)
