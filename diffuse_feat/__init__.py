"""diffuse_feat: a PyTorch Lightning framework for studying how diffusion models learn."""

from . import threads  # noqa: F401  first: the OpenMP wait policy must be set before torch is imported

__version__ = "0.1.0"
