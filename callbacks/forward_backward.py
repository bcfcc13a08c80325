"""``ForwardBackwardCallback``: time-resolved forward–backward reconstruction of the model being trained
(Sclocchi, Favero, Wyart 2024), next to the exact belief-propagation (BP) curve of the same data.

Every ``every_n_steps`` it runs :class:`~diffuse_feat.diagnostics.forward_backward.ForwardBackward` on a fixed probe
set with fixed noise: on the RHM (``mode="rhm"``) the class and every level of ``x_hat_0`` read by exact parsing,
beside exact BP on the very same noisy probes (computed once); on images (``mode="images"``) the class and the
change of hidden activations at every depth read by a ``classifier_checkpoint``. Each quantity over sigma is one
TensorBoard chart with a line per sigma (``p_class_by_sigma``, ...); ``diagnostics.jsonl`` keeps ``p_class_s<sigma>``.
"""

from __future__ import annotations

from diffuse_feat.diagnostic_callback import DiagnosticCallback
from diffuse_feat.diagnostics.forward_backward import ForwardBackward

__all__ = ["ForwardBackwardCallback"]


class ForwardBackwardCallback(DiagnosticCallback):
    """Forward–backward reconstruction of an RHM diffusion model against exact BP, or of images read by a
    classifier.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        use_ema, seed, at_train_end, name: as in :class:`~diffuse_feat.diagnostic_callback.DiagnosticCallback`.
        **settings: the measurement's (:class:`~diffuse_feat.diagnostics.forward_backward.ForwardBackward`): mode
            (``rhm`` or ``images``, never switched silently), sigmas, num_probes, num_steps, sampler, sigma_min,
            classifier_checkpoint.
    """

    def __init__(self, every_n_steps: int = 500, use_ema: bool = True, seed: int = 0, at_train_end: bool = True,
                 name: str | None = None, **settings):
        super().__init__(ForwardBackward(seed=seed, **settings), every_n_steps=every_n_steps,
                         at_train_end=at_train_end, use_ema=use_ema, name=name)
