"""The hierarchy reproduction end to end (``--quick``): the qualitative results of Sclocchi et al. (2024)."""

from __future__ import annotations

import json

import pytest

from diffuse_feat.reproduce.__main__ import main


@pytest.mark.slow
def test_quick_reproduction_shows_the_class_transition_and_smooth_low_levels(tmp_path):
    main(["hierarchy", "--quick", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "hierarchy.json").read_text())
    assert (tmp_path / "hierarchy.png").stat().st_size > 10_000
    ex = payload["exact"]
    assert ex["eps_star_theory"] == pytest.approx(0.731, abs=1e-3)
    eps = ex["eps"]
    deepest = ex["curves"]["10"]
    assert deepest["p_class"][eps.index(0.5)] > 0.9
    assert deepest["p_class"][eps.index(0.8)] < 0.06  # chance is 1/32
    assert ex["crossing"] == pytest.approx(ex["eps_star_theory"], abs=0.02)  # L=4 and L=10 curves cross at eps*
    # past eps* the class is gone while low-level features survive, more so the closer to the leaves
    l8 = ex["curves"]["8"]["p_unchanged"][eps.index(0.8)]
    assert l8[0] < 0.07 and l8[-1] > 0.35 and l8[-1] > l8[4] > l8[0]
    # the learned model on the small RHM: near-perfect reconstruction at small sigma, mostly grammatical outputs
    le = payload["learned"]
    assert le["bp"]["p_class"][0] == pytest.approx(1.0, abs=1e-6)
    assert le["model"]["p_class"][0] > 0.8 and le["model"]["p_valid"][0] > 0.8
    assert le["model"]["p_class"][-1] < 0.5
    # digits: the classifier's class is kept at small sigma and lost at large sigma
    dg = payload["digits"]
    assert dg["classifier_val_accuracy"] > 0.8
    assert dg["p_class"][0] > 0.9 and dg["p_class"][-1] < 0.5
