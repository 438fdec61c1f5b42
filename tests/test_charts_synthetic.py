"""The synthetic generator's answers, checked against the drawn figure's own matplotlib objects.

Every check here reads the figure (titles, tick label texts and their positions, Line2D data, legend texts,
bar patches, scatter offsets, colorbars, grid geometry) with its own code; nothing is re-derived from the
generator's sampled inputs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from skillweave.charts.charxiv import NOT_APPLICABLE, load_release
from skillweave.charts.synthetic import build_chart, generate_synthetic_set

N_CHARTS = 30


@pytest.fixture(scope="module")
def charts():
    return [build_chart(seed=7, index=i) for i in range(N_CHARTS)]


def grid_axes(fig):
    # colorbars are drawn with use_gridspec=False, so only the subplots carry a subplotspec
    return [a for a in fig.axes if a.get_subplotspec() is not None]


def target_axes(chart, loc):
    axes = grid_axes(chart.fig)
    if loc == [0, 0]:
        assert len(axes) == 1
        return axes[0]
    (ax,) = [a for a in axes if (a.get_subplotspec().rowspan.start + 1, a.get_subplotspec().colspan.start + 1)
             == tuple(loc)]
    return ax


def ticks(ax, which):
    """(position, text) of labelled ticks inside the view, sorted left-to-right / bottom-to-top."""
    labels = ax.get_xticklabels() if which == "x" else ax.get_yticklabels()
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    idx = 0 if which == "x" else 1
    out = [(t.get_position()[idx], t.get_text()) for t in labels if t.get_text()]
    return sorted((p, s) for p, s in out if lo <= p <= hi)


def colorbar_of(ax):
    return next((c.colorbar for c in ax.collections if getattr(c, "colorbar", None) is not None), None)


def segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return orient(p1, p2, q1) != orient(p1, p2, q2) and orient(q1, q2, p1) != orient(q1, q2, p2)


def lines_intersect(lines) -> bool:
    for a, b in itertools.combinations(lines, 2):
        pa, pb = a.get_xydata(), b.get_xydata()
        for i in range(len(pa) - 1):
            for j in range(len(pb) - 1):
                if segments_cross(pa[i], pa[i + 1], pb[j], pb[j + 1]):
                    return True
    return False


def trend_words(ys) -> str:
    signs = [("increases" if d > 0 else "decreases") for d in np.diff(ys) if d != 0]
    runs = [s for i, s in enumerate(signs) if i == 0 or s != signs[i - 1]]
    return " then ".join(runs)


def read_answer(chart, ax, qid):
    """The answer to template qid, read from the figure."""
    xt, yt = ticks(ax, "x"), ticks(ax, "y")
    legend = ax.get_legend()
    cbar = colorbar_of(ax)
    cb_labels = [t.get_text() for t in cbar.ax.get_yticklabels() if t.get_text()] if cbar else []
    if qid == 1:
        return ax.get_title() or NOT_APPLICABLE
    if qid in (2, 3):
        return (ax.get_xlabel() if qid == 2 else ax.get_ylabel()) or NOT_APPLICABLE
    if qid in (4, 5, 6, 7):
        return {4: xt[0], 5: xt[-1], 6: yt[0], 7: yt[-1]}[qid][1]
    if qid in (8, 9):
        texts = [s for _, s in (xt if qid == 8 else yt)]
        try:
            values = [float(s) for s in texts]
        except ValueError:
            return NOT_APPLICABLE
        diffs = np.diff(values)
        return float(diffs[0]) if np.allclose(diffs, diffs[0]) else NOT_APPLICABLE
    if qid == 10:
        return len(ax.lines) if ax.lines else NOT_APPLICABLE
    if qid == 11:
        return ("Yes" if lines_intersect(ax.lines) else "No") if ax.lines else NOT_APPLICABLE
    if qid == 12:
        return len(legend.get_texts()) if legend else NOT_APPLICABLE
    if qid == 13:
        return [t.get_text() for t in legend.get_texts()] if legend else NOT_APPLICABLE
    if qid in (14, 15):
        if not cb_labels:
            return NOT_APPLICABLE
        values = [float(s) for s in cb_labels]
        return max(values) - min(values) if qid == 14 else max(values)
    if qid == 16:
        words = {trend_words(line.get_ydata()) for line in ax.lines}
        assert len(words) == 1, "the trend question is asked only when all lines agree"
        return words.pop()
    if qid == 17:
        return len(xt) + len(yt) + len(cb_labels)
    if qid == 18:
        rows, cols = ax.get_subplotspec().get_gridspec().get_geometry()
        return f"{rows} by {cols}"
    if qid == 19:
        return len(grid_axes(chart.fig))
    raise AssertionError(qid)


def same(read, written) -> bool:
    if isinstance(read, list):
        return [s.strip() for s in written.split(",")] == read
    if isinstance(read, int | float) and not isinstance(read, bool):
        return written != NOT_APPLICABLE and abs(float(written) - read) < 1e-9
    return str(read) == written


def test_descriptive_answers_match_the_drawn_figure(charts):
    checked = set()
    for chart in charts:
        d = chart.descriptive
        ax = target_axes(chart, d["subplot_loc"])
        assert len(d["qids"]) == len(set(d["qids"])) == 4
        assert sum(a == NOT_APPLICABLE for a in d["answers"]) <= 1
        for qid, answer in zip(d["qids"], d["answers"], strict=True):
            read = read_answer(chart, ax, qid)
            assert same(read, answer), f"chart {chart.figure_id} Q{qid}: figure says {read!r}, file says {answer!r}"
            checked.add(qid)
    # the sample exercises most of the 19 templates, not a lucky few
    assert len(checked) >= 15, sorted(checked)


def test_every_template_answer_matches_on_the_target_panel(charts):
    """All 19 answers of each chart's target panel (not only the 4 sampled) agree with the figure."""
    from skillweave.charts.synthetic import descriptive_answers

    for chart in charts:
        loc = chart.descriptive["subplot_loc"]
        ax = target_axes(chart, loc)
        panel = next(p for p in chart.panels if p.ax is ax)
        answers = descriptive_answers(panel, chart.layout, len(chart.panels))
        for qid, answer in answers.items():
            assert same(read_answer(chart, ax, qid), answer), (chart.figure_id, qid, answer)


def _x_at(ax, label):
    return next(p for p, s in ticks(ax, "x") if s == label)


def _y_at(ax, label):
    return next(p for p, s in ticks(ax, "y") if s == label)


def _label_at(ax, position):
    return min(ticks(ax, "x"), key=lambda t: abs(t[0] - position))[1]


def read_reasoning(ax, template, params):
    lines = {line.get_label(): line for line in ax.lines}
    if template in ("highest_at_x->argmin_x", "lowest_at_x->count_above", "highest_at_x->direction"):
        x = _x_at(ax, params["x"])
        at_x = {name: line.get_ydata()[list(line.get_xdata()).index(x)] for name, line in lines.items()}
        pick = (max if template != "lowest_at_x->count_above" else min)(at_x, key=at_x.get)
        line = lines[pick]
        if template == "highest_at_x->argmin_x":
            return _label_at(ax, line.get_xdata()[int(np.argmin(line.get_ydata()))])
        if template == "lowest_at_x->count_above":
            return str(int(sum(v > _y_at(ax, params["y"]) for v in line.get_ydata())))
        x2 = _x_at(ax, params["x2"])
        return "up" if line.get_ydata()[list(line.get_xdata()).index(x2)] > at_x[pick] else "down"
    if template == "argmax_x->lowest_at_x":
        peak = int(np.argmax(lines[params["line"]].get_ydata()))
        return min(lines, key=lambda n: lines[n].get_ydata()[peak])
    if template == "argmax_x,argmin_x->distance":
        (line,) = lines.values()
        xs, ys = line.get_xdata(), line.get_ydata()
        return abs(xs[int(np.argmax(ys))] - xs[int(np.argmin(ys))])
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    if template == "tallest_cat->shortest_series":
        j = int(np.argmax(bars[params["series"]]))
        return min(bars, key=lambda n: bars[n][j])
    if template == "compare_pairs->count":
        return str(sum(a > b for a, b in zip(bars[params["a"]], bars[params["b"]], strict=True)))
    if template == "rank_bars->read_label":
        (container,) = ax.containers
        second = sorted(container.patches, key=lambda p: p.get_height())[-2]
        return _label_at(ax, second.get_x() + second.get_width() / 2)
    if template == "right_of_x&above_y->count":
        (coll,) = [c for c in ax.collections if c.get_label() == params["group"]]
        tx, ty = _x_at(ax, params["x"]), _y_at(ax, params["y"])
        return str(int(sum(x > tx and y > ty for x, y in coll.get_offsets())))
    raise AssertionError(template)


def read_cross_panel(fig, template):
    axes = grid_axes(fig)
    if template == "top_tick->compare_subplots":
        tops = {ax.get_title(): float(ticks(ax, "y")[-1][1]) for ax in axes}
        return max(tops, key=tops.get)
    if template == "legend->count_subplots":
        return str(sum(ax.get_legend() is not None for ax in axes))
    if template == "intersections->count_subplots":
        return str(sum(len(ax.lines) > 1 and lines_intersect(ax.lines) for ax in axes))
    raise AssertionError(template)


def test_compositional_reasoning_answers_match_the_figure(charts):
    templates = set()
    for chart in charts:
        r = chart.reasoning
        if r is None:
            continue
        assert len(r["skills"]) == 2 and r["qa_source"] == 4 and r["inst_category"] in (1, 2, 3, 4)
        if r["subplot_loc"] is None:  # spans every subplot
            assert len(grid_axes(chart.fig)) > 1 and "subplot" in r["query"]
            read = read_cross_panel(chart.fig, r["template"])
        else:
            read = read_reasoning(target_axes(chart, r["subplot_loc"]), r["template"], r["params"])
        assert same(read, r["answer"]), f"chart {chart.figure_id} {r['template']}: {read!r} vs {r['answer']!r}"
        templates.add(r["template"])
    assert sum(c.reasoning is not None for c in charts) >= 0.8 * N_CHARTS
    assert len(templates) >= 5, templates
    assert any(t.endswith("count_subplots") or t.endswith("compare_subplots") for t in templates)


def test_figures_are_deterministic_per_seed_and_index():
    a, b, c = build_chart(11, 4), build_chart(11, 4), build_chart(12, 4)
    assert a.descriptive == b.descriptive and a.reasoning == b.reasoning
    assert (a.descriptive, a.reasoning) != (c.descriptive, c.reasoning)


def test_written_folder_loads_with_the_release_loader(tmp_path):
    summary = generate_synthetic_set(tmp_path / "syn", n=5, seed=1)
    release = load_release(tmp_path / "syn")
    assert release.split == "val" and not release.check_images()
    questions = release.questions()
    descriptive = [q for q in questions if q.mode == "descriptive"]
    reasoning = [q for q in questions if q.mode == "reasoning"]
    assert len(descriptive) == 20 == summary["descriptive_questions"]
    assert len(reasoning) == summary["reasoning_questions"] >= 3
    assert all(q.extra.get("exact") for q in questions)
    assert all(len(q.extra["skills"]) == 2 for q in reasoning)
    for q in descriptive:
        if q.qid in (18, 19):
            assert not q.question.startswith("For ")
        else:
            assert q.question.startswith("For the plot shown" if q.num_subplots == 1 else "For the subplot in row")
    with open(release.image_path(descriptive[0].figure_id), "rb") as fh:
        assert fh.read(3) == b"\xff\xd8\xff"  # a JPEG, as the release layout names it
