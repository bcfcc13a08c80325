"""Every figure module draws from plain measurements, without Lightning: here from the pure diagnostics run on
exact references (which is also how every diagnostic is reachable without training)."""

from __future__ import annotations

from pathlib import Path

import torch

from diffuse_feat.data import DigitsDataModule, GaussianMixtureDataModule, RHMDataModule
from diffuse_feat.diagnostics.cloning import cloning_experiment
from diffuse_feat.diagnostics.gaussian_structure import (
    GaussianStructure,
    gaussian_structure_references,
    measure_gaussian_structure,
)
from diffuse_feat.diagnostics.hierarchy import bp_gaussian_forward_backward, image_forward_backward
from diffuse_feat.diagnostics.regimes_references import regimes_references, regimes_summary
from diffuse_feat.ou import ou_time_grid
from diffuse_feat.plotting import save_figure
from diffuse_feat.plotting.feature_learning import alignment_figure
from diffuse_feat.plotting.forward_backward import forward_backward_figure, image_forward_backward_figure
from diffuse_feat.plotting.gaussian_structure import plot_gaussian_structure
from diffuse_feat.plotting.regimes import regimes_figure
from diffuse_feat.plotting.samples import samples_scatter
from diffuse_feat.samplers import SeededNoise


def saved(fig, tmp_path, name: str, axes: int) -> None:
    assert len(fig.axes) >= axes
    assert save_figure(fig, tmp_path / f"{name}.png").stat().st_size > 1000


def test_gaussian_structure_figure_from_the_gaussian_denoiser_itself(tmp_path):
    dm = DigitsDataModule(n_train=200, n_val=20)
    dm.setup()
    gaussian = dm.gaussian_denoiser()
    settings = GaussianStructure(num_pairs=6, num_sigmas=6, jacobian_sigmas=(1.0,), jacobian_points=1,
                                 jacobian_k=3, jacobian_probes=4, num_distill_sigmas=3, num_samples=4,
                                 sample_steps=4)
    device = torch.device("cpu")
    refs = gaussian_structure_references(dm.train_tensor(), gaussian, dm.empirical_denoiser(), dm.val_tensor(),
                                         True, settings, device)
    values, samples, nearest = measure_gaussian_structure(gaussian, refs, settings, device)
    # D_G measured against itself: zero distance, the exact linearity curve, its own samples
    assert max(values["rmse_to_gaussian"].tolist()) < 1e-5 and values["generation_nmse_to_gaussian"] < 1e-10
    assert torch.allclose(values["linearity_cosine"], values["gaussian_linearity_cosine"])
    fig = plot_gaussian_structure(values, samples, refs["gaussian_samples"], nearest, mid_band=settings.mid_band)
    saved(fig, tmp_path, "gaussian_structure", 6)


def test_regimes_figure_from_the_exact_empirical_score(tmp_path):
    dm = GaussianMixtureDataModule(dim=8, pool_size=40, n_val=0)
    times = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    refs = regimes_references(dm.empirical_denoiser(), times, n=40, d=8, mixture=dm, labels=dm.train_labels(),
                              reference_samples=50)
    assert refs["t_C_theory"] == dm.collapse_time(40) and refs["phi_theory"].shape == (3,)
    res = cloning_experiment(dm.empirical_denoiser(), dm.data_shape, times, labeler=dm.oracle_labels,
                             train=dm.train_tensor(), num_pairs=8, times=ou_time_grid(2.5, 1e-3, 0.25, 1.0, 4))
    values = regimes_summary(res, refs)
    assert {"phi_theory", "phi_memorizer", "t_S_measured", "t_C_phi"} <= set(values)
    saved(regimes_figure(values, res["t_hat_C"], refs["f_theory_over_alpha"], title="exact"), tmp_path, "regimes", 3)


def test_forward_backward_figures_from_exact_bp(tmp_path):
    dm = RHMDataModule(v=4, n_c=4, m=2, s=2, L=3, pool_size=64, n_val=16)
    x0, trees = dm.val_tensor(), dm.val_trees()
    sigmas = [0.1, 0.5, 2.0]
    exact = bp_gaussian_forward_backward(dm.bp_denoiser(), x0, trees, sigmas, SeededNoise(range(16)).randn_like(x0))
    saved(forward_backward_figure(sigmas, None, exact, title="BP"), tmp_path, "forward_backward", 2)
    images = image_forward_backward(lambda x, s: x * 0, x0, sigmas, None, seeds=range(16), num_steps=2)
    saved(image_forward_backward_figure(sigmas, images), tmp_path, "images", 1)


def test_alignment_and_scatter_figures(tmp_path):
    last = {"signal": torch.randn(6, 2), "noise": torch.randn(6, 10)}
    history = [{"step": s, "signal": 0.1 * s, "noise": 0.05 * s, "increment_ratio": 2.0} for s in range(4)]
    saved(alignment_figure(last, history, theory=2.0), tmp_path, "alignment", 3)
    saved(samples_scatter(torch.randn(20, 2), torch.randn(30, 2), title="2-D"), tmp_path, "scatter", 1)


def test_the_feature_learning_digits_panel_labels_its_measured_values_without_overlap(tmp_path, monkeypatch):
    """Over less than a decade a log axis labels its minor ticks (2x10^0, 3x10^0, 4x10^0) on top of each other; the
    noisy-digits panel labels the n SNR^2 it measured instead."""
    import json

    import matplotlib.figure

    from diffuse_feat.reproduce.feature_learning import plot

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    payload = json.loads((Path(__file__).resolve().parent.parent / "results/quick/feature_learning.json").read_text())
    plot(payload, tmp_path / "feature_learning.png")
    panel = drawn[0].axes[2]
    measured = sorted({r["n_snr2"] for r in payload["noisy_digits"]["runs"]})
    assert [t.get_text() for t in panel.get_xticklabels()] == [f"{v:g}" for v in measured]
    assert not [t for t in panel.xaxis.get_minorticklabels() if t.get_text()]
