"""``RegimesCallback``: speciation and collapse of the model being trained (Biroli et al. 2024).

Every ``every_n_steps`` it runs :class:`~diffuse_feat.diagnostics.regimes.Regimes`, the cloning experiment on the
diffusion model (OU time) with the same starting noise and the same noise every time: ``phi(t)`` and ``t_S``,
``phi_C(t)`` and the collapse times, and draws in the references computed once (the exact empirical score's
``phi`` and ``phi_C``, the entropy proxy with its theory, ``t_C_theory``). As a small training set is memorized,
the model's ``phi_C`` climbs onto the memorizer's curve.
"""

from __future__ import annotations

from diffuse_feat.diagnostic_callback import DiagnosticCallback
from diffuse_feat.diagnostics.regimes import Regimes

__all__ = ["RegimesCallback"]


class RegimesCallback(DiagnosticCallback):
    """Cloning (``phi``, ``phi_C``) and collapse times of the model being trained, against theory.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        use_ema, seed, at_train_end, name: as in :class:`~diffuse_feat.diagnostic_callback.DiagnosticCallback`.
        **settings: the measurement's (:class:`~diffuse_feat.diagnostics.regimes.Regimes`): num_pairs, clone_times,
            num_clone_times, t_max, t_min, step, num_geometric, method, labeler (auto, oracle, classifier,
            nearest_train), classifier_checkpoint, classifier_sigma, compare_labelers, reference_samples, max_batch.

    The defaults are sized for monitoring during training (under 10% of the default experiment's training time,
    ``benchmarks/callback_cost.py``). Classes are read by the data's ``oracle_labels``, a ``classifier_checkpoint``
    or ``labeler="nearest_train"``; subclass ``Regimes`` and override ``make_labeler`` to read them another way.
    """

    def __init__(self, every_n_steps: int = 500, use_ema: bool = True, seed: int = 0, at_train_end: bool = True,
                 name: str | None = None, **settings):
        super().__init__(Regimes(seed=seed, **settings), every_n_steps=every_n_steps, at_train_end=at_train_end,
                         use_ema=use_ema, name=name)
