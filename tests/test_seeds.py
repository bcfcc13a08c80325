"""Summaries over seeds: closed-form means and standard errors, and the two-standard-error rule."""

import math

import pytest

from diffuse_feat.reproduce.seeds import exceeds, mean_and_se, seed_list, summarize_over_seeds


def test_mean_and_standard_error_match_the_textbook_formula():
    mean, se = mean_and_se([1.0, 2.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx(math.sqrt(((4 + 1 + 9) / 2) / 3))  # sample variance 7 over n = 3
    assert mean_and_se([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_and_se([1.0, None]))


def test_summary_keeps_keys_as_means_and_adds_se_and_per_seed():
    per_seed = [{"a": 1.0, "ok": True, "curve": [0.0, 2.0], "name": "x"},
                {"a": 3.0, "ok": False, "curve": [2.0, 2.0], "name": "x"}]
    s = summarize_over_seeds(per_seed)
    assert s["a"] == 2.0 and s["a_se"] == pytest.approx(1.0) and s["a_per_seed"] == [1.0, 3.0]
    assert s["ok"] == 0.5 and s["ok_per_seed"] == [True, False]
    assert s["curve"] == [1.0, 2.0] and s["curve_se"] == [pytest.approx(1.0), 0.0]
    assert s["name"] == "x"


def test_a_trend_counts_only_beyond_two_standard_errors():
    assert exceeds(0.0, 0.1, 0.3, 0.1)          # 0.3 > 2 * 0.1414
    assert not exceeds(0.0, 0.1, 0.25, 0.1)     # 0.25 < 0.2828
    assert not exceeds(0.3, 0.0, 0.0, 0.0)      # a fall is not a rise
    with pytest.raises(ValueError, match="--seeds must be at least 1"):
        seed_list(0, 0)
    assert seed_list(3, 2) == [3, 4]
