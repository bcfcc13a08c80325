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


def test_a_figure_of_panels_is_one_image_per_panel_about_a_card_wide(tmp_path):
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from diffuse_feat.plotting.feature_learning import alignment_figure
    from diffuse_feat.plotting.samples import samples_scatter
    from diffuse_feat.reporting import RunReporter

    g = torch.Generator().manual_seed(0)
    last = {"signal": torch.randn(8, 2, generator=g), "noise": torch.randn(8, 6, generator=g)}
    history = [{"step": s, "signal": s / 10, "noise": s / 20, "increment_ratio": 2.0} for s in range(0, 50, 10)]
    writer = SummaryWriter(str(tmp_path))
    reporter = RunReporter(tmp_path, writers=[writer])
    reporter.figure("figures/three", alignment_figure(last, history, theory=2.0), 5)
    reporter.figure("figures/one", samples_scatter(torch.randn(20, 2, generator=g)), 5)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    tags = sorted(events.Tags()["images"])
    assert tags[0] == "figures/one" and [t.split("/")[-1][:2] for t in tags[1:]] == ["0_", "1_", "2_"]
    for tag in tags:  # TensorBoard's image cards are ~320-380 px wide: a panel is shown near its own size
        image = events.Images(tag)[0]
        assert image.width <= 420 and image.height <= 420, (tag, image.width, image.height)
    heat_map = events.Images(tags[1])[0]
    assert heat_map.width > events.Images(tags[2])[0].width  # the colorbar stayed with its heat map


def test_sample_grids_show_each_image_at_least_48_pixels_wide():
    import torch

    from diffuse_feat.plotting.sample_grid import MIN_IMAGE_PIXELS, image_grid

    digits = torch.rand(6, 1, 8, 8) * 2 - 1
    grid = image_grid(digits, nrow=3)
    assert MIN_IMAGE_PIXELS == 48 and grid.shape[-1] >= 3 * 48 and grid.shape[-2] >= 2 * 48
    assert grid.min() >= 0 and grid.max() <= 1
    assert torch.equal(grid[0, 6:12, 6:12], grid[0, 6, 6].expand(6, 6))  # one digit pixel: a 6x6 block, sharp
