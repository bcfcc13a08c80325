"""diffuse_feat: a PyTorch Lightning framework for studying how diffusion models learn."""

__version__ = "0.1.0"
