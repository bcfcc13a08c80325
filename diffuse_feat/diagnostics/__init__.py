"""Diagnostics, no Lightning: pure tensor functions, and one measurement object per family built on them.

Each works on any denoiser ``D(x, sigma)`` (learned or exact), so it can be checked against theory on an exact
reference without training. A measurement (:mod:`.measurement`) is what the callbacks, ``analyze`` and the
reproductions share: :class:`~.gaussian_structure.GaussianStructure`, :class:`~.regimes.Regimes`,
:class:`~.forward_backward.ForwardBackward`, :class:`~.feature_alignment.FeatureAlignment`,
:class:`~.samples.SampleGrid`, :class:`~.samples.Memorization`.

Import the submodule you need, e.g. ``from diffuse_feat.diagnostics.neighbors import nearest_neighbors``.
"""
