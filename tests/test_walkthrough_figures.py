"""The walkthrough's figures, drawn as ``fastgrad demo --plots`` draws them, checked for what a
reader saw go wrong: overlapping tick labels, a run too short to see, a label on top of the
data, one colour for two things, an axis named for what it does not show."""

from __future__ import annotations

import itertools
from typing import Any, List

import numpy as np
import pytest

from fastgrad import walkthrough

mpl = pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.text import Text  # noqa: E402

MIN_RUN_WIDTH_PX = 20  # a 2-step run beside 1000-step ones spans at least this much of the axis


@pytest.fixture(scope="module")
def drawn():
    """{experiment id: (experiment, its figure, drawn)} for the experiments checked here."""
    out = {}
    for eid in ("E4", "E5", "E6", "E7", "E8"):
        module = walkthrough.MODULES[eid]
        ex = module.run()
        fig = module.figure(ex)
        FigureCanvasAgg(fig).draw()
        out[eid] = (ex, fig)
    return out


def visible_tick_labels(axis: Any) -> List[Any]:
    lo, hi = sorted(axis.get_view_interval())
    return [t.label1 for t in axis.get_major_ticks()
            if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]


@pytest.mark.parametrize("eid", ["E4", "E7"])
def test_no_tick_labels_overlap(drawn, eid):
    ex, fig = drawn[eid]
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in visible_tick_labels(axis)]
            for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
                assert not box_a.overlaps(box_b), f"{eid}: tick labels {a!r} and {b!r} overlap"


def test_e4_weights_are_on_a_symmetric_log_scale_with_zero(drawn):
    _, fig = drawn["E4"]
    ax_w = fig.axes[2]
    assert ax_w.get_yscale() == "symlog"
    locs = [t.get_loc() for t in ax_w.yaxis.get_major_ticks()]
    assert 0.0 in locs and any(v > 0 for v in locs) and any(v < 0 for v in locs)


def test_e7_the_two_step_run_is_drawn_visibly(drawn):
    ex, fig = drawn["E7"]
    assert ex.results["loss_delta"].steps == 2
    ax_loss = fig.axes[0]
    (line,) = [line for line in ax_loss.get_lines() if line.get_label() == "loss_delta"]
    xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
    px = ax_loss.transData.transform(xy)[:, 0]
    assert px.max() - px.min() >= MIN_RUN_WIDTH_PX
    assert line.get_marker() not in (None, "None", "", " ")  # every step marked


@pytest.mark.parametrize("eid", ["E4", "E5", "E7"])
def test_stop_labels_sit_clear_of_every_line(drawn, eid):
    ex, fig = drawn[eid]
    ax_loss = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax_loss.texts if " at step " in t.get_text()]
    stopped = [name for name, r in ex.results.items() if r.stopped_by != "max_steps"]
    assert len(labels) == len(stopped)
    for text in labels:
        box = Text.get_window_extent(text, renderer)  # the text alone, without its leader line
        for line in ax_loss.get_lines():
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            if len(xy) == 1 and np.allclose(xy[0], text.xy):
                continue  # the label's own point
            path = line.get_transform().transform_path(line.get_path())
            assert not path.intersects_bbox(box, filled=False), \
                f"{eid}: {text.get_text()!r} lies on the line {line.get_label()!r}"


@pytest.mark.parametrize("eid", ["E6", "E7"])
def test_weight_lines_take_colours_no_run_has(drawn, eid):
    ex, fig = drawn[eid]
    ax_loss, _, ax_w = fig.axes
    run_colors = {to_rgba(line.get_color()) for line in ax_loss.get_lines() if line.get_label() in ex.results}
    weight_lines = [line for line in ax_w.get_lines() if not line.get_label().startswith("_")]  # not the truth lines
    assert len(run_colors) == len(ex.results) and len(weight_lines) == 4
    weight_colors = [to_rgba(line.get_color()) for line in weight_lines]
    assert len(set(weight_colors)) == len(weight_lines)
    assert not run_colors & set(weight_colors)


@pytest.mark.parametrize("eid, label", [("E8", "L2 norm of each weight tensor"), ("E6", "weight value")])
def test_the_weights_axis_says_what_it_shows(drawn, eid, label):
    _, fig = drawn[eid]
    ax_w = fig.axes[2]
    assert ax_w.get_ylabel() == label
    drawn_norms = [line.get_label().startswith("‖") for line in ax_w.get_lines()
                   if not line.get_label().startswith("_")]
    assert drawn_norms and all(drawn_norms) == ("norm" in label)
