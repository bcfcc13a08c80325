import os

import diffuse_feat  # noqa: F401  first: its thread policy must be in the environment before torch is imported

# isort: split
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
if "OMP_NUM_THREADS" not in os.environ:  # the user's choice wins; else at most 2: the tests' tensors are small
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def random_covariance(d: int, rank: int | None = None, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, rank or d, generator=g, dtype=dtype) / (rank or d) ** 0.5
    return a @ a.T
