"""The reproductions' own checks on hand-made records: trends count only beyond two standard errors, the early
increment is read inside the linear phase, a split filter shows in ``signal_max_over_median``, and bad input stops
with one sentence before any training."""

from __future__ import annotations

import pytest
import torch

from diffuse_feat.reproduce.__main__ import main
from diffuse_feat.reproduce.feature_learning import QUICK, diffusion_lr, early_gd_time, filter_spread
from diffuse_feat.reproduce.gaussian_structure import steps_for, trends


def _run(n, memorized, linearity, rmse_mid, rmse_high=0.05, se=0.01):
    return {"n_train": n, "probes_held_out": True, "memorized_fraction": memorized, "memorized_fraction_se": se,
            "linearity_min_mid": linearity, "linearity_min_mid_se": se, "rmse_to_gaussian_mid": rmse_mid,
            "rmse_to_gaussian_mid_se": se, "rmse_to_gaussian_high": rmse_high, "rmse_to_gaussian_high_se": se}


def test_trends_hold_for_a_clean_sweep():
    runs = [_run(16, 1.0, 0.90, 0.20), _run(32, 0.95, 0.92, 0.18), _run(256, 0.1, 0.95, 0.15),
            _run(1024, 0.0, 0.97, 0.12), _run(1600, 0.0, 0.97, 0.11)]
    assert all(trends(runs).values()), trends(runs)


@pytest.mark.parametrize(("change", "broken"), [
    ({"linearity_min_mid": 0.925}, "linearity_min_mid_rises"),  # +0.025 < 2 SE of the difference (0.028)
    ({"rmse_to_gaussian_mid": 0.175}, "rmse_to_gaussian_mid_falls"),
    ({"rmse_to_gaussian_high": 0.12}, "rmse_to_gaussian_high_below_0.1_at_largest_n"),
    ({"memorized_fraction": 0.06}, "largest_generalizes"),
])
def test_each_trend_can_fail(change, broken):
    runs = [_run(16, 1.0, 0.90, 0.20), _run(32, 0.95, 0.92, 0.18), _run(1600, 0.0, 0.97, 0.11)]
    runs[-1].update(change)
    assert not trends(runs)[broken]


def test_small_sets_memorize_only_above_0_9_and_the_fraction_must_not_rise():
    runs = [_run(16, 0.89, 0.90, 0.20), _run(1600, 0.0, 0.97, 0.11)]
    assert not trends(runs)["smallest_memorizes"]
    runs = [_run(16, 0.95, 0.90, 0.20), _run(256, 0.0, 0.95, 0.15), _run(1600, 0.2, 0.97, 0.11)]
    assert not trends(runs)["memorized_fraction_falls"]


def test_small_sets_train_longer():
    assert steps_for(1600, 1500) == steps_for(256, 1500) == 1500 < steps_for(32, 1500)


def test_early_reading_moves_inside_the_shorter_linear_phase():
    assert early_gd_time(0.75) == early_gd_time(6.75) == pytest.approx(0.3)
    assert early_gd_time(20.25) == pytest.approx(0.1) and early_gd_time(60.75) == pytest.approx(0.3 / 9)


def test_diffusion_step_shrinks_only_above_20():
    assert diffusion_lr(QUICK, 0.25) == diffusion_lr(QUICK, 20.25) == QUICK.diffusion_lr
    assert diffusion_lr(QUICK, 60.75) == pytest.approx(QUICK.diffusion_lr / 3)


def test_filter_spread_sees_one_filter_split_off():
    signal, noise = torch.full((20, 2), 2.0, dtype=torch.float64), torch.full((20, 30), 1.0, dtype=torch.float64)
    alike = filter_spread(signal, noise)
    assert alike == {"ratio_mean_filters": pytest.approx(2.0), "signal_max_over_median": pytest.approx(1.0)}
    signal[4] = 5.7
    split = filter_spread(signal, noise)
    assert split["signal_max_over_median"] == pytest.approx(2.85) and split["ratio_mean_filters"] < 2.2


@pytest.mark.parametrize(("argv", "words"), [
    (["gaussian_structure", "--sizes", "32", "5000"], "1797"),
    (["gaussian_structure", "--seeds", "0"], "--seeds"),
    (["feature_learning", "--n-snr2", "0.75", "0"], "must be > 0"),
    (["feature_learning", "--n-snr2", "-2"], "must be > 0"),
    (["feature_learning", "--seeds", "0"], "--seeds"),
    (["gaussian_structure", "--workers", "0"], "--workers must be at least 1"),
    (["feature_learning", "--workers", "0"], "--workers must be at least 1"),
], ids=["n_larger_than_the_data", "gs_zero_seeds", "zero_snr", "negative_snr", "fl_zero_seeds", "gs_zero_workers",
        "fl_zero_workers"])
def test_bad_input_stops_with_one_sentence(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and err.startswith("error: ") and words in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out" / f"{argv[0]}.json").exists()

