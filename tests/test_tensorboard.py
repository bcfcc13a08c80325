"""TensorBoard layout: a curve over sigma is one chart (one Custom Scalars card) with a line per sigma, every point in
the run itself (one entry a run in the run selector); `epoch` once per epoch; a resume purges the later points."""

import re
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from diffuse_feat.diagnostics.measurement import Curve, Measured
from diffuse_feat.run_logger import RunLogger
from diffuse_feat.tensorboard_layout import chart_of, layout_of


@pytest.mark.parametrize(("tag", "chart"), [
    ("val/loss_by_sigma/sigma=0.02", "val/loss_by_sigma"),
    ("train/loss_by_sigma/sigma<0.05", "train/loss_by_sigma"),
    ("train/loss_by_sigma/sigma=0.05-0.2", "train/loss_by_sigma"),
    ("train/loss_by_sigma/sigma>=5", "train/loss_by_sigma"),
    ("val/acc/0.5", "val/acc"),
    ("train/loss", None),
    ("train/loss_by_sigma/all", None),
    ("lr-Adam", None),
    ("diagnostics/memorization/memorized_fraction", None),
    ("diagnostics/fb/p_class_s0.5", None),  # a diagnostic's curve is never read back out of a name
])
def test_which_lightning_metrics_are_points_of_a_curve_and_of_which_chart(tag, chart):
    assert chart_of(tag) == chart


@pytest.mark.parametrize(("name", "axis", "point", "chart", "line", "key"), [
    ("p_class", "sigma", 0.5, "p_class_by_sigma", "sigma=0.5", "p_class_s0.5"),
    ("change_3", "sigma", 1e-05, "change_3_by_sigma", "sigma=1e-05", "change_3_s1e-05"),
    ("accuracy", "level", 2, "accuracy_by_level", "level=2", "accuracy_level2"),
    ("phi", "t", 0.5, "phi_by_t", "t=0.5", "phi_t0.5"),
])
def test_a_curve_names_its_chart_its_lines_and_its_jsonl_keys(name, axis, point, chart, line, key):
    curve = Curve(axis, (point,), (1.0,))
    assert (curve.chart(name), curve.line(point), curve.point_key(name, point)) == (chart, line, key)


def test_a_charts_regex_takes_its_own_tag_and_no_neighbours():
    layout = layout_of(["train/loss_by_sigma", "diagnostics/fb/p_class_by_sigma"])
    assert set(layout) == {"train", "diagnostics/fb"}
    kind, [regex] = layout["diagnostics/fb"]["diagnostics/fb/p_class_by_sigma"]
    assert kind == "Multiline" and re.match(regex, "diagnostics/fb/p_class_by_sigma/sigma=0.5")
    assert re.match(layout["train"]["train/loss_by_sigma"][1][0], "train/loss_by_sigma/sigma<0.05")
    assert not re.match(regex, "diagnostics/fb/p_class_by_sigma")
    assert not re.match(regex, "diagnostics/fb/bp_p_class_by_sigma/sigma=0.5")
    assert not re.match(regex, "diagnostics/fb/p_class_by_sigma/sigma=0.5/extra")


def _layout(run_dir: Path) -> layout_pb2.Layout:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    proto = layout_pb2.Layout()
    proto.ParseFromString(events.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0])
    return proto


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of one run (one folder, not its sub-folders): its (step, value) points."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _sub_runs(run_dir: Path) -> set[str]:
    return {p.name for p in Path(run_dir).iterdir() if p.is_dir()}


SIGMAS = (0.25, 1, 8)  # exact in float32, as TensorBoard stores a scalar


def _log_six_steps(logger: RunLogger, steps=range(6), shift: float = 0.0) -> None:
    for step in steps:
        epoch = step // 3
        logger.log_metrics({"train/loss": 1.0, "epoch": epoch}, step)
        logger.log_metrics({f"val/loss_by_sigma/sigma={s}": s * step + shift for s in SIGMAS} | {"epoch": epoch}, step)


def test_run_logger_writes_each_curve_as_one_chart_with_a_line_per_sigma_in_the_run_itself(tmp_path):
    logger = RunLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    _log_six_steps(logger)
    logger.finalize("success")
    run_dir = Path(logger.log_dir)
    main = _scalars(run_dir)
    points = {f"val/loss_by_sigma/sigma={s}" for s in SIGMAS}
    assert set(main) == {"train/loss", "epoch"} | points
    assert [step for step, _ in main["epoch"]] == [0, 3]
    assert _sub_runs(run_dir) == set()  # one entry in TensorBoard's run selector
    for s in SIGMAS:
        assert main[f"val/loss_by_sigma/sigma={s}"] == [(step, s * step) for step in range(6)]
    charts = {chart.title: list(chart.multiline.tag) for cat in _layout(run_dir).category for chart in cat.chart}
    assert list(charts) == ["val/loss_by_sigma"]
    [regex] = charts["val/loss_by_sigma"]
    assert {tag for tag in main if re.match(regex, tag)} == points  # the chart draws a line per sigma


def test_a_resumed_run_drops_the_later_points_of_its_curves_too(tmp_path):
    first = RunLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    _log_six_steps(first)  # interrupted after step 5; its checkpoint was at step 2
    first.finalize("failed")
    # TensorBoard reads a folder's event files in name order, named by the second they were opened (then a counter
    # that sorts 10 before 9): a real resume starts seconds later
    time.sleep(1.1)
    resumed = RunLogger(tmp_path, name="run", version=0, default_hp_metric=False, purge_step=3)
    _log_six_steps(resumed, steps=range(3, 6), shift=100.0)
    resumed.finalize("success")
    run_dir = Path(resumed.log_dir)
    assert [step for step, _ in _scalars(run_dir)["train/loss"]] == [0, 1, 2, 3, 4, 5]
    for s in SIGMAS:
        points = _scalars(run_dir)[f"val/loss_by_sigma/sigma={s}"]
        assert points == [(step, s * step + (100.0 if step >= 3 else 0.0)) for step in range(6)]


def test_a_run_without_a_curve_has_no_layout_and_off_rank_zero_writes_nothing(tmp_path):
    from diffuse_feat.reporting import RunReporter

    logger = RunLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    logger.log_metrics({"train/loss": 1.0, "train/loss_by_sigma/all": 2.0}, 0)
    other_rank = RunReporter(logger.log_dir, writers=[logger.experiment], is_writer=False)
    other_rank.measured("diagnostics/fb", Measured({}, {"p_class": Curve("sigma", (0.5,), (1.0,))}), 0)
    other_rank.flush()
    logger.finalize("success")
    assert _sub_runs(Path(logger.log_dir)) == set()
    assert set(_scalars(Path(logger.log_dir))) == {"train/loss", "train/loss_by_sigma/all"}
    events = EventAccumulator(str(logger.log_dir), size_guidance={"tensors": 0}).Reload()
    assert metadata.CONFIG_SUMMARY_TAG not in events.Tags()["tensors"]


def test_reporter_and_logger_share_the_run_and_the_layout(tmp_path):
    from diffuse_feat.reporting import RunReporter, read_jsonl

    logger = RunLogger(tmp_path, name="run", version=0, default_hp_metric=False, prefix="")
    reporter = RunReporter(logger.log_dir, writers=[logger.experiment])
    measured = Measured({"accuracy": 0.9}, {"p_class": Curve("sigma", (0.1, 1), (0.25, 0.5)),
                                             "change_2": Curve("level", (2,), (0.75,))})
    values = {"p_class_s0.1": 0.25, "p_class_s1": 0.5, "change_2_level2": 0.75, "accuracy": 0.9}
    assert measured.record() == values
    reporter.measured("diagnostics/fb", measured, 7)
    reporter.record("fb", 7, measured.record())
    logger.log_metrics({"val/loss_by_sigma/sigma=1": 3.0}, 7)
    reporter.flush()
    logger.finalize("success")
    run_dir = Path(logger.log_dir)
    assert _scalars(run_dir) == {"diagnostics/fb/accuracy": [(7, pytest.approx(0.9))],
                                 "diagnostics/fb/p_class_by_sigma/sigma=1": [(7, 0.5)],
                                 "diagnostics/fb/p_class_by_sigma/sigma=0.1": [(7, 0.25)],
                                 "diagnostics/fb/change_2_by_level/level=2": [(7, 0.75)],
                                 "val/loss_by_sigma/sigma=1": [(7, 3.0)]}
    assert _sub_runs(run_dir) == set() and len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    charts = {chart.title for cat in _layout(run_dir).category for chart in cat.chart}
    assert charts == {"diagnostics/fb/p_class_by_sigma", "diagnostics/fb/change_2_by_level", "val/loss_by_sigma"}
    assert read_jsonl(run_dir / "diagnostics.jsonl") == [{"name": "fb", "step": 7, "values": values}]


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
