"""Synthetic charts with exact answers: matplotlib line, bar and scatter charts written as a CharXiv folder.

Design choices
- Every axis gets explicit tick positions *and* explicit tick label strings, so the "leftmost labeled tick" or
  "tick spacing" answers are the strings matplotlib draws, not a guess about its automatic locator.
- Data are sampled inside the tick range with margins (lines never nearly touch, points never sit on a
  threshold, extremes are unique by a visible gap) so that each answer can be read off the image exactly;
  a draw that violates a margin is resampled, a question whose margin cannot be met is not asked.
- Descriptive questions use the same 19 templates and `subplot_loc` convention as CharXiv (4 per chart, at
  most one 'Not Applicable'); the answer is read from the drawn axes after `fig.canvas.draw()`.
- Reasoning questions compose two chart-reading skills (the Skill-Mix idea applied to charts), e.g. "find
  the line that is highest at x=t" + "find where that line is lowest". Each records its `skills`,
  `template` and `params` as extra keys of `reasoning_{split}.json` (readers of the official format ignore
  them), so tests and reports can recompute and break down by skill. On multi-subplot charts 40% of the
  reasoning questions span all subplots (e.g. "how many subplots have a legend?"); the rest name one subplot.
- Metadata: `category` is the subject whose vocabulary named the axes; `year` is a sampled placeholder in
  20..23 (kept only so the official breakdowns work), `qa_source` is 4 = synthetic.
- A figure's draw depends only on (seed, index), so figure i is identical whatever n is. Figures are
  `matplotlib.figure.Figure` objects on an Agg canvas (no pyplot state).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skillweave.charts.charxiv import NOT_APPLICABLE, write_release

VOCAB: dict[str, dict[str, list[str]]] = {
    "cs": {"titles": ["Training curves", "Scaling study", "Ablation", "Throughput", "Validation accuracy"],
           "x": ["Epoch", "Batch size", "Number of layers", "Step (k)"],
           "y": ["Accuracy (%)", "Loss", "F1 score", "Latency (ms)"],
           "series": ["Baseline", "Ours", "Adam", "SGD", "LoRA", "Full FT", "Teacher"],
           "cats": ["CIFAR", "MNIST", "SVHN", "STL", "COCO", "VOC"]},
    "physics": {"titles": ["Energy spectrum", "Phase response", "Cooling run", "Field sweep"],
                "x": ["Time (s)", "Temperature (K)", "Field (T)", "Pressure (GPa)"],
                "y": ["Energy (eV)", "Resistance", "Intensity (a.u.)", "Magnetization"],
                "series": ["Sample A", "Sample B", "Sample C", "Theory", "Run 1", "Run 2"],
                "cats": ["Cu", "Fe", "Ni", "Al", "Si", "Ge"]},
    "econ": {"titles": ["Output gap", "Wage growth", "Trade balance", "Inflation path"],
             "x": ["Year", "Quarter", "Months after shock", "Income decile"],
             "y": ["Growth (%)", "Index", "Share of GDP (%)", "Price level"],
             "series": ["Urban", "Rural", "North", "South", "Model", "Data"],
             "cats": ["US", "UK", "Japan", "Brazil", "India", "Kenya"]},
    "q-bio": {"titles": ["Dose response", "Growth assay", "Expression levels", "Survival"],
              "x": ["Dose (mg)", "Day", "Generation", "Hours"],
              "y": ["Viability (%)", "Expression", "Cell count", "Fitness"],
              "series": ["Wild type", "Mutant", "Control", "Treated", "Strain 1", "Strain 2"],
              "cats": ["Liver", "Heart", "Lung", "Brain", "Kidney", "Skin"]},
}
LAYOUTS = [((1, 1), 6), ((1, 2), 3), ((2, 1), 2), ((2, 2), 2), ((1, 3), 1), ((2, 3), 1)]
SHAPES = ["increases", "decreases", "increases then decreases", "decreases then increases"]
Y_STEPS = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 25, 50]
MARGIN = 0.04  # fraction of an axis span that separates anything a question depends on
CROSS_PANEL_SHARE = 0.4  # multi-subplot charts whose reasoning question spans all subplots


def _decimals(step: float) -> int:
    text = f"{step:g}"
    return len(text.split(".")[1]) if "." in text else 0


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


@dataclass
class Axis:
    """Explicit ticks of one numeric axis: positions and the strings drawn at them."""

    start: float
    step: float
    count: int

    @property
    def ticks(self) -> list[float]:
        return [round(self.start + i * self.step, 10) for i in range(self.count)]

    @property
    def labels(self) -> list[str]:
        return [_fmt(t, _decimals(self.step)) for t in self.ticks]

    @property
    def lo(self) -> float:
        return self.ticks[0]

    @property
    def hi(self) -> float:
        return self.ticks[-1]

    @property
    def span(self) -> float:
        return self.hi - self.lo


def _sample_axis(rng: np.random.Generator, *, zero_start: bool = False) -> Axis:
    step = float(rng.choice(Y_STEPS))
    count = int(rng.integers(4, 8))
    start = 0.0 if zero_start else float(rng.integers(-2, 5)) * step * int(rng.choice([1, 2, 5]))
    return Axis(start, step, count)


@dataclass
class Panel:
    """One subplot: what is drawn and the labels on it."""

    kind: str  # line | bar | scatter
    row: int  # 1-based
    col: int
    title: str | None
    xlabel: str | None
    ylabel: str | None
    xaxis: Axis | None  # numeric x (line, scatter); None for bar categories
    yaxis: Axis
    categories: list[str] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)  # line/bar values
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # scatter groups
    legend: bool = False
    colorbar: Axis | None = None
    shape: str | None = None
    ax: Any = None


@dataclass
class SyntheticChart:
    figure_id: str
    fig: Any
    panels: list[Panel]
    layout: tuple[int, int]
    metadata: dict
    descriptive: dict
    reasoning: dict | None


# ---- sampling ---------------------------------------------------------------------------------------
def _profile(rng: np.random.Generator, shape: str, n: int) -> np.ndarray:
    """A curve in [0, 1] with the given shape, strictly monotone on each piece."""
    steps = rng.uniform(0.4, 1.0, n - 1)
    if shape in ("increases", "decreases"):
        y = np.concatenate([[0], np.cumsum(steps)])
        y = y if shape == "increases" else y[::-1]
    else:
        peak = int(rng.integers(2, n - 2)) if n >= 5 else n // 2
        signs = np.where(np.arange(n - 1) < peak, 1.0, -1.0)
        y = np.concatenate([[0], np.cumsum(steps * signs)])
        y = y if shape == "increases then decreases" else -y
    return (y - y.min()) / (y.max() - y.min())


def _lines_ok(series: dict[str, list[float]], span: float) -> bool:
    values = list(series.values())
    return all(
        min(abs(a - b) for a, b in zip(u, v, strict=True)) >= MARGIN * span for u, v in itertools.combinations(values, 2)
    )


def _sample_panel(rng: np.random.Generator, kind: str, row: int, col: int, vocab: dict, multi: bool) -> Panel:
    title = str(rng.choice(vocab["titles"])) if rng.random() < (0.85 if multi else 0.6) else None
    if title and multi:
        title = f"({'abcdef'[(row - 1) * 3 + col - 1]}) {title}"
    xlabel = str(rng.choice(vocab["x"])) if rng.random() < 0.85 else None
    ylabel = str(rng.choice(vocab["y"])) if rng.random() < 0.85 else None
    names = [str(s) for s in rng.choice(vocab["series"], size=3, replace=False)]
    if kind == "line":
        xaxis = Axis(float(rng.choice([0, 1, 10, 2000])), float(rng.choice([1, 2, 5, 10])), int(rng.integers(5, 9)))
        yaxis = _sample_axis(rng)
        n_lines = int(rng.choice([1, 2, 2, 3, 3]))
        shape = str(rng.choice(SHAPES))
        for _ in range(50):
            series = {}
            for name in names[:n_lines]:
                low, height = rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.9)
                height = min(height, 0.95 - low)
                p = _profile(rng, shape, xaxis.count)
                series[name] = [round(yaxis.lo + yaxis.span * (low + height * v), 3) for v in p]
            if _lines_ok(series, yaxis.span):
                break
        else:
            series = {names[0]: series[names[0]]}
        legend = len(series) > 1 or rng.random() < 0.3
        return Panel(kind, row, col, title, xlabel, ylabel, xaxis, yaxis, series=series, legend=legend, shape=shape)
    if kind == "bar":
        yaxis = _sample_axis(rng, zero_start=True)
        cats = [str(c) for c in rng.choice(vocab["cats"], size=int(rng.integers(3, 6)), replace=False)]
        n_series = int(rng.choice([1, 2, 3]))
        series = {n: [round(yaxis.span * rng.uniform(0.1, 0.95), 3) for _ in cats] for n in names[:n_series]}
        return Panel(kind, row, col, title, xlabel, ylabel, None, yaxis, categories=cats, series=series,
                     legend=n_series > 1)
    xaxis, yaxis = _sample_axis(rng), _sample_axis(rng)
    n_groups = int(rng.choice([1, 2, 3]))
    points = {}
    for name in names[:n_groups]:
        center = rng.uniform(0.25, 0.75, 2)
        pts = np.clip(center + rng.normal(0, 0.15, (int(rng.integers(6, 13)), 2)), 0.03, 0.97)
        points[name] = [(round(xaxis.lo + xaxis.span * a, 3), round(yaxis.lo + yaxis.span * b, 3)) for a, b in pts]
    colorbar = Axis(0.0, float(rng.choice([0.2, 0.25, 0.5, 1, 10])), int(rng.integers(3, 6))) \
        if n_groups == 1 and rng.random() < 0.5 else None
    return Panel(kind, row, col, title, xlabel, ylabel, xaxis, yaxis, points=points, legend=n_groups > 1,
                 colorbar=colorbar)


# ---- drawing ----------------------------------------------------------------------------------------
def _pad(axis: Axis) -> tuple[float, float]:
    return axis.lo - 0.03 * axis.span, axis.hi + 0.03 * axis.span


def draw_panel(fig, ax, panel: Panel, rng: np.random.Generator) -> None:
    panel.ax = ax
    if panel.kind == "line":
        x = panel.xaxis.ticks
        for name, ys in panel.series.items():
            ax.plot(x, ys, marker="o", markersize=3, label=name)
    elif panel.kind == "bar":
        width = 0.8 / len(panel.series)
        for j, (name, heights) in enumerate(panel.series.items()):
            offsets = [i - 0.4 + width * (j + 0.5) for i in range(len(panel.categories))]
            ax.bar(offsets, heights, width=width * 0.95, label=name)
        ax.set_xticks(range(len(panel.categories)), labels=panel.categories)
        ax.set_xlim(-0.6, len(panel.categories) - 0.4)
    else:
        for name, pts in panel.points.items():
            xs, ys = zip(*pts, strict=True)
            if panel.colorbar is not None:
                cb_axis = panel.colorbar
                values = rng.uniform(cb_axis.lo, cb_axis.hi, len(xs))
                sc = ax.scatter(xs, ys, c=values, vmin=cb_axis.lo, vmax=cb_axis.hi, s=14, label=name)
                cbar = fig.colorbar(sc, ax=ax, ticks=cb_axis.ticks, use_gridspec=False)
                cbar.ax.set_yticklabels(cb_axis.labels)
            else:
                ax.scatter(xs, ys, s=14, label=name)
    if panel.xaxis is not None:
        ax.set_xticks(panel.xaxis.ticks, labels=panel.xaxis.labels)
        ax.set_xlim(*_pad(panel.xaxis))
    ax.set_yticks(panel.yaxis.ticks, labels=panel.yaxis.labels)
    ax.set_ylim(*_pad(panel.yaxis))
    if panel.title:
        ax.set_title(panel.title, fontsize=10)
    if panel.xlabel:
        ax.set_xlabel(panel.xlabel)
    if panel.ylabel:
        ax.set_ylabel(panel.ylabel)
    if panel.legend:
        ax.legend(fontsize=7, ncols=1)


# ---- descriptive answers (read from the drawn axes) -------------------------------------------------
def visible_tick_labels(ax, which: str) -> list[str]:
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    return [t.get_text() for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs(), strict=True)
            if lo <= v <= hi and t.get_text()]


def _step_answer(labels: list[str]) -> str:
    try:
        values = [float(s) for s in labels]
    except ValueError:
        return NOT_APPLICABLE
    diffs = {round(b - a, 9) for a, b in itertools.pairwise(values)}
    if len(values) < 2 or len(diffs) != 1:
        return NOT_APPLICABLE
    decimals = max(_decimals(float(s)) if "." in s else 0 for s in labels)
    return _fmt(diffs.pop(), decimals)


def _intersects(series: list[list[float]]) -> bool:
    for u, v in itertools.combinations(series, 2):
        d = np.sign(np.subtract(u, v))
        if (d == 0).any() or (d[:-1] * d[1:] < 0).any():
            return True
    return False


def descriptive_answers(panel: Panel, layout: tuple[int, int], num_subplots: int) -> dict[int, str]:
    """All 19 answers for one panel, read from its matplotlib axes (draw the figure first)."""
    ax = panel.ax
    xl, yl = visible_tick_labels(ax, "x"), visible_tick_labels(ax, "y")
    lines = ax.get_lines()
    legend = ax.get_legend()
    legend_texts = [t.get_text() for t in legend.get_texts()] if legend else []
    cbar = next((c.colorbar for c in ax.collections if getattr(c, "colorbar", None) is not None), None)
    cb_labels = [t.get_text() for t in cbar.ax.get_yticklabels()] if cbar else []
    answers = {
        1: ax.get_title() or NOT_APPLICABLE, 2: ax.get_xlabel() or NOT_APPLICABLE,
        3: ax.get_ylabel() or NOT_APPLICABLE, 4: xl[0], 5: xl[-1], 6: yl[0], 7: yl[-1],
        8: _step_answer(xl), 9: _step_answer(yl),
        10: str(len(lines)) if panel.kind == "line" else NOT_APPLICABLE,
        11: ("Yes" if _intersects([list(line.get_ydata()) for line in lines]) else "No")
        if panel.kind == "line" else NOT_APPLICABLE,
        12: str(len(legend_texts)) if legend_texts else NOT_APPLICABLE,
        13: ", ".join(legend_texts) if legend_texts else NOT_APPLICABLE,
        14: NOT_APPLICABLE, 15: NOT_APPLICABLE,
        17: str(len(xl) + len(yl) + len(cb_labels)),
        18: f"{layout[0]} by {layout[1]}", 19: str(num_subplots),
    }
    if cb_labels:
        values = [float(s) for s in cb_labels]
        decimals = max(_decimals(float(s)) if "." in s else 0 for s in cb_labels)
        answers[14] = _fmt(max(values) - min(values), decimals)
        answers[15] = cb_labels[int(np.argmax(values))]
    if panel.kind == "line":
        answers[16] = panel.shape
    return answers


def pick_descriptive(rng: np.random.Generator, answers: dict[int, str]) -> list[int]:
    """Four distinct templates, at most one of them answered 'Not Applicable'."""
    applicable = [q for q, a in answers.items() if a != NOT_APPLICABLE]
    na = [q for q, a in answers.items() if a == NOT_APPLICABLE]
    n_na = int(rng.random() < 0.5 and bool(na))
    chosen = list(rng.choice(applicable, size=min(4 - n_na, len(applicable)), replace=False))
    if n_na:
        chosen.append(int(rng.choice(na)))
    return [int(q) for q in chosen]


# ---- compositional reasoning ------------------------------------------------------------------------
def _unique_extreme(values: list[float], span: float, largest: bool) -> int | None:
    order = np.argsort(values)[::-1] if largest else np.argsort(values)
    if len(values) > 1 and abs(values[order[0]] - values[order[1]]) < MARGIN * 1.5 * span:
        return None
    return int(order[0])


def _clear_of(values: list[float], threshold: float, span: float) -> bool:
    return all(abs(v - threshold) >= MARGIN * span for v in values)


def reasoning_candidates(panel: Panel, rng: np.random.Generator) -> list[dict]:
    """Every two-skill question whose margins hold on this panel: dicts of query/answer/type/skills/params."""
    out: list[dict] = []
    span = panel.yaxis.span
    names = list(panel.series)
    if panel.kind == "line":
        xl = panel.xaxis.labels
        for i in rng.permutation(len(xl))[:3]:
            i = int(i)
            at_x = [panel.series[n][i] for n in names]
            if len(names) >= 2 and (top := _unique_extreme(at_x, span, True)) is not None:
                j = _unique_extreme(panel.series[names[top]], span, False)
                if j is not None:
                    out.append({"template": "highest_at_x->argmin_x", "skills": ["compare series at a position",
                                "locate an extremum"], "inst_category": 3, "params": {"x": xl[i]}, "answer": xl[j],
                                "query": f"Take the line that is highest at x = {xl[i]}. At which x-axis tick value "
                                         "does that line reach its lowest point?"})
            if len(names) >= 2 and (low := _unique_extreme(at_x, span, False)) is not None:
                for k, thr in enumerate(panel.yaxis.ticks[1:-1], start=1):
                    values = panel.series[names[low]]
                    if _clear_of(values, thr, span):
                        count = sum(v > thr for v in values)
                        out.append({"template": "lowest_at_x->count_above", "skills": ["compare series at a position",
                                    "count against a threshold"], "inst_category": 4,
                                    "params": {"x": xl[i], "y": panel.yaxis.labels[k]}, "answer": str(count),
                                    "query": f"Consider the line that is lowest at x = {xl[i]}. How many of its "
                                             f"marked points lie above y = {panel.yaxis.labels[k]}?"})
                        break
            if len(names) >= 2 and i + 1 < len(xl) and (top := _unique_extreme(at_x, span, True)) is not None:
                j = int(rng.integers(i + 1, len(xl)))
                ys = panel.series[names[top]]
                if abs(ys[j] - ys[i]) >= MARGIN * span:
                    out.append({"template": "highest_at_x->direction", "skills": ["compare series at a position",
                                "read a trend"], "inst_category": 2, "params": {"x": xl[i], "x2": xl[j]},
                                "answer": "up" if ys[j] > ys[i] else "down",
                                "query": f"From x = {xl[i]} to x = {xl[j]}, does the line that is highest at "
                                         f"x = {xl[i]} go up or down? Options: up, down."})
        for name in names if len(names) >= 2 else []:
            j = _unique_extreme(panel.series[name], span, True)
            at_peak = [panel.series[n][j] for n in names] if j is not None else []
            if j is not None and (low := _unique_extreme(at_peak, span, False)) is not None:
                out.append({"template": "argmax_x->lowest_at_x", "skills": ["locate an extremum",
                            "compare series at a position"], "inst_category": 1, "params": {"line": name},
                            "answer": names[low], "query": f"At the x value where the line '{name}' is highest, "
                                                           "which line has the lowest value?"})
        if len(names) == 1:
            ys = panel.series[names[0]]
            hi, lo = _unique_extreme(ys, span, True), _unique_extreme(ys, span, False)
            if hi is not None and lo is not None:
                diff = abs(panel.xaxis.ticks[hi] - panel.xaxis.ticks[lo])
                out.append({"template": "argmax_x,argmin_x->distance", "skills": ["locate an extremum",
                            "locate an extremum"], "inst_category": 4, "params": {},
                            "answer": _fmt(diff, _decimals(panel.xaxis.step)),
                            "query": "How far apart along the x-axis are the line's highest and lowest points?"})
    elif panel.kind == "bar":
        cats = panel.categories
        if len(names) >= 2:
            for name in names:
                j = _unique_extreme(panel.series[name], span, True)
                at_cat = [panel.series[n][j] for n in names] if j is not None else []
                if j is not None and (low := _unique_extreme(at_cat, span, False)) is not None:
                    out.append({"template": "tallest_cat->shortest_series", "skills": ["locate an extremum",
                                "compare series at a position"], "inst_category": 1, "params": {"series": name},
                                "answer": names[low], "query": f"In the category where '{name}' has its tallest bar, "
                                                               "which series has the shortest bar?"})
            a, b = names[0], names[1]
            diffs = [u - v for u, v in zip(panel.series[a], panel.series[b], strict=True)]
            if all(abs(d) >= MARGIN * span for d in diffs):
                out.append({"template": "compare_pairs->count", "skills": ["compare series at a position",
                            "count against a threshold"], "inst_category": 4, "params": {"a": a, "b": b},
                            "answer": str(sum(d > 0 for d in diffs)),
                            "query": f"In how many categories is the '{a}' bar taller than the '{b}' bar?"})
        else:
            heights = panel.series[names[0]]
            order = np.argsort(heights)[::-1]
            if len(heights) >= 3 and min(heights[order[0]] - heights[order[1]],
                                         heights[order[1]] - heights[order[2]]) >= MARGIN * span:
                out.append({"template": "rank_bars->read_label", "skills": ["rank values", "read a tick label"],
                            "inst_category": 1, "params": {}, "answer": cats[int(order[1])],
                            "query": "Which category has the second tallest bar?"})
    else:
        xs_all = [p for pts in panel.points.values() for p in pts]
        for k in range(1, panel.xaxis.count - 1):
            tx = panel.xaxis.ticks[k]
            for m in range(1, panel.yaxis.count - 1):
                ty = panel.yaxis.ticks[m]
                if _clear_of([p[0] for p in xs_all], tx, panel.xaxis.span) and _clear_of([p[1] for p in xs_all], ty, span):
                    name = str(rng.choice(list(panel.points)))
                    count = sum(x > tx and y > ty for x, y in panel.points[name])
                    group = f"of '{name}' " if len(panel.points) > 1 else ""
                    out.append({"template": "right_of_x&above_y->count", "skills": ["count against a threshold",
                                "count against a threshold"], "inst_category": 4,
                                "params": {"group": name, "x": panel.xaxis.labels[k], "y": panel.yaxis.labels[m]},
                                "answer": str(count), "query": f"How many points {group}lie to the right of "
                                f"x = {panel.xaxis.labels[k]} and above y = {panel.yaxis.labels[m]}?"})
    return out


def cross_panel_candidates(panels: list[Panel]) -> list[dict]:
    """Two-skill questions over all subplots of a figure (no subplot locator): read in each, then compare/count."""
    out: list[dict] = []
    titles = [p.title for p in panels]
    tops = [p.yaxis.hi for p in panels]
    if all(titles) and len(set(titles)) == len(titles) and tops.count(max(tops)) == 1:
        out.append({"template": "top_tick->compare_subplots", "skills": ["read a tick label", "compare across subplots"],
                    "inst_category": 1, "params": {}, "answer": titles[tops.index(max(tops))],
                    "query": "Which subplot has the largest highest labeled y-axis tick? Answer with its title."})
    out.append({"template": "legend->count_subplots", "skills": ["read a legend", "count subplots"],
                "inst_category": 4, "params": {}, "answer": str(sum(p.legend for p in panels)),
                "query": "How many of the subplots have a legend?"})
    if any(p.kind == "line" for p in panels):
        crossing = sum(p.kind == "line" and _intersects(list(p.series.values())) for p in panels)
        out.append({"template": "intersections->count_subplots", "skills": ["detect line intersections",
                    "count subplots"], "inst_category": 4, "params": {}, "answer": str(crossing),
                    "query": "In how many subplots do two of the lines cross each other?"})
    return out


# ---- one chart and a whole set ----------------------------------------------------------------------
def build_chart(seed: int, index: int) -> SyntheticChart:
    """Sample, draw and question one chart (an Agg `Figure`, outside pyplot's registry)."""
    rng = np.random.default_rng([seed, index])
    subject = str(rng.choice(list(VOCAB)))
    layouts, weights = zip(*LAYOUTS, strict=True)
    rows, cols = layouts[int(rng.choice(len(layouts), p=np.array(weights) / sum(weights)))]
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)  # Agg directly: no pyplot registry, nothing to close, safe in worker threads
    axes = fig.subplots(rows, cols, squeeze=False)
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    if len(cells) >= 6 and rng.random() < 0.5:  # an empty cell: layout and subplot count then differ
        fig.delaxes(axes[rows - 1][cols - 1])
        cells = cells[:-1]
    panels = []
    for r, c in cells:
        kind = str(rng.choice(["line", "line", "bar", "scatter"]))
        panel = _sample_panel(rng, kind, r + 1, c + 1, VOCAB[subject], multi=len(cells) > 1)
        draw_panel(fig, axes[r][c], panel, rng)
        panels.append(panel)
    fig.canvas.draw()
    target = panels[int(rng.integers(len(panels)))]
    answers = descriptive_answers(target, (rows, cols), len(panels))
    qids = pick_descriptive(rng, answers)
    loc = [0, 0] if len(panels) == 1 else [target.row, target.col]
    figure_id = str(index)
    descriptive = {"figure_id": index, "num_subplots": len(panels), "subplot_loc": loc, "qids": qids,
                   "answers": [answers[q] for q in qids], "exact": True, "kind": target.kind}
    reasoning = None
    candidates = reasoning_candidates(target, rng)
    if candidates:
        pick = candidates[int(rng.integers(len(candidates)))]
        query = pick["query"]
        if len(panels) > 1:
            query = f"In the subplot in row {target.row}, column {target.col}: {query[0].lower()}{query[1:]}"
        reasoning = {"figure_id": index, "query": query, "answer": pick["answer"],
                     "inst_category": pick["inst_category"], "qa_source": 4, "skills": pick["skills"],
                     "template": pick["template"], "params": pick["params"], "subplot_loc": loc, "exact": True}
    # a separate stream, so adding cross-subplot questions left every other draw of a chart unchanged
    side = np.random.default_rng([seed, index, 1])
    if len(panels) > 1 and side.random() < CROSS_PANEL_SHARE:
        cross = cross_panel_candidates(panels)
        pick = cross[int(side.integers(len(cross)))]
        reasoning = {"figure_id": index, "query": pick["query"], "answer": pick["answer"],
                     "inst_category": pick["inst_category"], "qa_source": 4, "skills": pick["skills"],
                     "template": pick["template"], "params": pick["params"], "subplot_loc": None, "exact": True}
    metadata = {"category": subject, "year": str(20 + int(rng.integers(0, 4))),
                "figure_path": f"images/{figure_id}.jpg", "num_subplots": len(panels),
                "caption": f"Synthetic {rows}x{cols} chart ({', '.join(p.kind for p in panels)}) about {subject}.",
                "paper_id": f"synthetic-{seed}-{index}", "title": f"Synthetic chart {index} (seed {seed})"}
    return SyntheticChart(figure_id, fig, panels, (rows, cols), metadata, descriptive, reasoning)


def generate_synthetic_set(out: str | Path, n: int = 20, *, seed: int = 0, split: str = "val",
                           dpi: int = 100) -> dict:
    """Write n charts as a CharXiv folder (images + three JSON files); returns a summary."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    metadata, descriptive, reasoning = {}, {}, {}
    for index in range(n):
        chart = build_chart(seed, index)
        chart.fig.savefig(out / "images" / f"{chart.figure_id}.jpg", dpi=dpi, pil_kwargs={"quality": 90})
        metadata[chart.figure_id] = chart.metadata
        descriptive[chart.figure_id] = chart.descriptive
        if chart.reasoning:
            reasoning[chart.figure_id] = chart.reasoning
    write_release(out, split, metadata, descriptive, reasoning)
    return {"folder": str(out), "split": split, "charts": n, "descriptive_questions": 4 * len(descriptive),
            "reasoning_questions": len(reasoning), "seed": seed}
