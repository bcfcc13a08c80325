"""TensorBoard layout: a curve over sigma is one chart with a line per sigma; `epoch` once per epoch."""

import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from diffuse_feat.run_logger import RunLogger
from diffuse_feat.tensorboard_layout import chart_of, layout_of


@pytest.mark.parametrize(("tag", "chart"), [
    ("val/loss_by_sigma/sigma=0.02", "val/loss_by_sigma"),
    ("train/loss_by_sigma/sigma<0.05", "train/loss_by_sigma"),
    ("train/loss_by_sigma/sigma=0.05-0.2", "train/loss_by_sigma"),
    ("train/loss_by_sigma/sigma>=5", "train/loss_by_sigma"),
    ("diagnostics/fb/p_class_s0.5", "diagnostics/fb/p_class (by sigma)"),
    ("diagnostics/fb/change_3_s1e-05", "diagnostics/fb/change_3 (by sigma)"),
    ("train/loss", None),
    ("lr-Adam", None),
    ("diagnostics/memorization/memorized_fraction", None),
])
def test_which_tags_are_points_of_a_curve(tag, chart):
    found = chart_of(tag)
    assert (found[0] if found else None) == chart


def test_a_charts_regex_takes_its_own_points_and_no_neighbours():
    _, regex = chart_of("diagnostics/fb/p_class_s0.5")
    assert re.match(regex, "diagnostics/fb/p_class_s80")
    assert not re.match(regex, "diagnostics/fb/bp_p_class_s80")
    assert not re.match(regex, "diagnostics/fb/p_class_s80/extra")
    layout = layout_of([chart_of("train/loss_by_sigma/sigma<0.05"), chart_of("diagnostics/fb/p_class_s1")])
    assert set(layout) == {"train", "diagnostics/fb"}


def _layout(run_dir: Path) -> layout_pb2.Layout:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    proto = layout_pb2.Layout()
    proto.ParseFromString(events.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0])
    return proto


def test_run_logger_writes_one_multiline_chart_per_curve_and_epoch_once_per_epoch(tmp_path):
    logger = RunLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    for step in range(6):
        epoch = step // 3
        logger.log_metrics({"train/loss": 1.0, "epoch": epoch}, step)
        logger.log_metrics({f"val/loss_by_sigma/sigma={s}": s * step for s in (0.1, 1, 10)} | {"epoch": epoch}, step)
    logger.finalize("success")
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in events.Scalars("epoch")] == [0, 3]
    charts = {chart.title: list(chart.multiline.tag) for cat in _layout(Path(logger.log_dir)).category
              for chart in cat.chart}
    assert list(charts) == ["val/loss_by_sigma"]
    lines = [t for t in events.Tags()["scalars"] if re.match(charts["val/loss_by_sigma"][0], t)]
    assert len(lines) == 3
