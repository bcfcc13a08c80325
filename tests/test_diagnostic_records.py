"""A training run's ``diagnostics.jsonl`` and TensorBoard tags keep their keys and values through refactorings.

``tests/data/diagnostics_records.json`` was written by ``python tests/diagnostic_record_runs.py`` before the
measurement objects replaced the callbacks' own measuring code. The same short runs are made again here and must
give the same records: every key (no key lost, none added), the same steps, and every number equal to float
rounding (LAPACK's SVD and QR of the Jacobian may round differently from one memory layout to the next, about 1e-8
relative; nothing else moves), and the same TensorBoard tags (every curve's points in the run itself, as
``<chart>/<line>``).
"""

from __future__ import annotations

import json
import math

import pytest

from .diagnostic_record_runs import STORED, record_runs


def assert_same(stored, now, path=""):
    if isinstance(stored, dict):
        assert isinstance(now, dict) and set(now) == set(stored), (path, sorted(set(now) ^ set(stored)))
        for key, value in stored.items():
            assert_same(value, now[key], f"{path}/{key}")
    elif isinstance(stored, list):
        assert isinstance(now, list) and len(now) == len(stored), path
        for i, (a, b) in enumerate(zip(stored, now, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(stored, float):
        assert isinstance(now, float) and math.isclose(stored, now, rel_tol=1e-6, abs_tol=1e-9), (path, stored, now)
    else:
        assert stored == now and type(stored) is type(now), (path, stored, now)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return record_runs(tmp_path_factory.mktemp("records"))


def test_every_callback_records_the_keys_and_values_it_recorded_before(records):
    stored = json.loads(STORED.read_text())
    assert set(records) == set(stored)
    for run, content in stored.items():
        assert_same(content["records"], records[run]["records"], run)


def test_every_callback_writes_the_tensorboard_tags_it_wrote_before(records):
    stored = json.loads(STORED.read_text())
    for run, content in stored.items():
        assert records[run]["tensorboard"] == content["tensorboard"], run


def test_the_comparison_fails_on_a_changed_value_or_a_lost_key():
    record = {"p_class_s0.5": 0.25, "sigma": [0.5], "depths": ["pixels"]}
    assert_same(record, dict(record))
    with pytest.raises(AssertionError):
        assert_same(record, {**record, "p_class_s0.5": 0.25 * (1 + 1e-5)})
    with pytest.raises(AssertionError):
        assert_same(record, {k: v for k, v in record.items() if k != "sigma"})
