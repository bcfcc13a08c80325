"""Diagnostics: pure tensor functions, no Lightning. Each works on any denoiser ``D(x, sigma)``
(learned or exact), so it can be checked against theory on an exact reference without training.

Import the submodule you need, e.g. ``from diffuse_feat.diagnostics.neighbors import nearest_neighbors``.
"""
