"""Skill-Mix grading maths (docs/methods.md#skillmix-judge and
docs/methods.md#skillmix-metrics): judge-reply parsers, length repair, the programmatic
sentence override, and the metrics aggregated over grading samples, generation rounds and combinations.

Score tensor P[G rounds, R grading samples, M combinations, k+3]. Per item a majority vote over R
(numpy rint: an even-R tie rounds to 0); per generation the metrics below; across rounds the max (or
mean) per combination, independently per metric; reported as mean ± SE (ddof=1) over combinations.
"""

from __future__ import annotations

import re

import numpy as np

_HONORIFICS = re.compile(r"\b(Mr|Mrs|Ms|Dr|Prof)\. ")
_SENTENCE_BREAK = re.compile(r"[.!?]['\"]* ['\"]*(?=[A-Z])")
_NOT_NUMBER = re.compile(r"[^0-9./]")  # parse_table: a cell keeps its digits, dots and slashes
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

HEADLINE = {
    "all_points_earned_binary": "Ratio of Full Marks",
    "all_skills_and_good_rest": "Ratio of All Skills",
    "average_over_skills_filtered": "Skill Fraction",
}


def sentence_limit(k: int) -> int:
    return max(1, k - 1)


def sentence_limit_words(k: int) -> str:
    n = sentence_limit(k)
    word = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
    return f"{word} sentence" + ("" if n == 1 else "s")


def count_sentences(text: str) -> int:
    """The reference regex count: drop honorific periods, split at [.!?] + quotes + one space + quotes + A-Z."""
    text = _HONORIFICS.sub(lambda m: m.group(1) + " ", text.strip())
    return len(_SENTENCE_BREAK.split(text))


def extract_answer(output: str, answer_marker: str = "Answer:", explanation_marker: str = "Explanation") -> str:
    """Text after the last answer marker, cut at the first explanation marker after it, stripped; markers are
    case-sensitive, as the official text extraction splits on them (no marker: the whole reply)."""
    start = output.rfind(answer_marker)
    text = output[start + len(answer_marker):] if start >= 0 else output
    cut = text.find(explanation_marker)
    if cut >= 0:
        text = text[:cut]
    return text.strip()


def parse_table(reply: str) -> tuple[list[float], float | None]:
    """Markdown-table judge reply -> (points in row order, total). Header/separator lines are skipped."""
    points, total = [], None
    for line in reply.splitlines():
        if "|" not in line or "--" in line or "criteria" in line.lower():
            continue
        cells = line.strip().strip("|").split("|")
        if len(cells) < 2:
            continue
        # the cell's digits, dots and slashes (whitespace goes with the rest), up to the first slash; a cell that is
        # plain ASCII digits around whitespace (the usual "| 1 |") is that already
        value = cells[1].strip()
        if not (value.isascii() and value.isdigit()):
            value = _NOT_NUMBER.sub("", cells[1]).split("/")[0]
        try:
            number = float(value)
        except ValueError:
            continue
        if "total" in cells[0].lower():  # whitespace around the cell cannot make or break "total"
            total = number
        else:
            points.append(number)
    return points, total


def parse_point_list(reply: str, marker: str = "points:") -> tuple[list[float], float | None]:
    """Point-list judge reply: the number after each per-item marker; 'total grade' line is the total."""
    points, total = [], None
    for line in reply.splitlines():
        low = line.lower()
        if "total grade" in low:
            m = re.search(r"total grade\s*:?\s*([0-9.]+)", low)
            total = float(m.group(1).rstrip(".")) if m else None
            continue
        idx = low.find(marker)
        if idx >= 0:
            m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)", low[idx + len(marker):])
            if m:
                points.append(float(m.group(1)))
    return points, total


def repair_length(points: list[float], k: int) -> list[float]:
    """Empty -> all zeros; longer than k+3 -> truncate; shorter -> pad with zeros."""
    return (list(points) + [0.0] * (k + 3))[: k + 3]


def grade_points(reply: str, k: int, text: str, *, variant: str = "table", skills: list[str] = (),
                 filter_explicit_name: bool = False) -> tuple[list[float], str]:
    """Parse one judge sample into the k+3 rubric points, with the mandatory sentence override.

    Returns (points, parse_status) where status is 'ok', 'repaired' (wrong length) or 'empty'.
    """
    parsed, _ = parse_table(reply) if variant == "table" else \
        parse_point_list(reply, marker="earned:" if variant == "points_earned" else "points:")
    status = "ok" if len(parsed) == k + 3 else ("empty" if not parsed else "repaired")
    points = repair_length(parsed, k)  # numerators as parsed (the reference keeps them unclipped)
    points[k + 2] = 1.0 if count_sentences(text) <= sentence_limit(k) else 0.0
    if filter_explicit_name:
        lower = text.lower()
        for i, name in enumerate(skills[:k]):
            if name.split("(")[0].strip().lower() in lower:
                points[i] = 0.0
    return points, status


def generation_metrics(points: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Metrics for voted points of shape (..., k+3)."""
    s = points[..., :k].sum(-1)
    r = points[..., k:].sum(-1)
    total = s + r
    return {
        "all_points_earned_binary": (total == k + 3).astype(float),
        "all_skills_and_good_rest": ((s == k) & (r >= 2)).astype(float),
        "average_over_skills_filtered": np.where(r == 3, s / k, 0.0),
        "sum": total,
        "average": total / (k + 3),
        "rescaled_sum": (total / (k + 3)) ** (k + 3),
        "split_skills_vs_rest_binary": ((s == k) & (r == 3)).astype(float),
        "average_over_skills": s / k,
        "sum_over_skills": s,
        "sum_over_skills_filtered": np.where(r == 3, s, 0.0),
    }


def aggregate(P: np.ndarray, k: int, across_rounds: str = "max") -> dict[str, dict[str, float]]:
    """P[G, R, M, k+3] -> {metric: {mean, se, n}} over M combinations."""
    if P.ndim != 4 or P.shape[-1] != k + 3:
        raise ValueError(f"expected P of shape (G, R, M, {k + 3}), got {P.shape}")
    voted = np.rint(P.mean(axis=1))  # (G, M, k+3); numpy rint rounds half to even
    per_generation = generation_metrics(voted, k)  # each (G, M)
    out = {}
    for name, values in per_generation.items():
        per_combo = values.max(axis=0) if across_rounds == "max" else values.mean(axis=0)
        m = per_combo.shape[0]
        se = float(per_combo.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
        out[name] = {"mean": float(per_combo.mean()), "se": se, "n": m}
    return out


def aggregate_records(records: list[tuple[int, int, list[list[float]]]], k: int,
                      across_rounds: str = "max") -> dict[str, dict[str, float]]:
    """Ragged form of `aggregate`: records of (combination, round, samples[R][k+3]) for one k.

    Rounds with no grade (failed items) are left out; a combination enters with the rounds it has. Records with
    the same number of samples and width are voted and scored as one array (10^5 items report in one pass);
    the per-combination max or mean runs in record order, so every value equals the record-by-record result.
    """
    combos: dict[int, int] = {}  # combination -> its position, in first-seen order
    groups: dict[tuple[int, int], list[int]] = {}
    kept: list[tuple[int, list[list[float]]]] = []
    for combo, _round, samples in records:
        if not samples:
            continue
        widths = {len(s) for s in samples}
        if len(widths) != 1:  # ragged samples fail as they always did
            np.asarray(samples, dtype=float)
        groups.setdefault((len(samples), widths.pop()), []).append(len(kept))
        kept.append((combos.setdefault(combo, len(combos)), samples))
    values = {name: np.zeros(len(kept)) for name in generation_metrics(np.zeros(k + 3), k)}
    for members in groups.values():
        voted = np.rint(np.asarray([kept[i][1] for i in members], dtype=float).mean(axis=1))
        for name, column in generation_metrics(voted, k).items():
            values[name][members] = column
    position = np.array([c for c, _ in kept], dtype=np.intp)
    m = len(combos)
    out = {}
    for name, column in values.items():
        if across_rounds == "max":
            per_combo = np.full(m, -np.inf)
            np.maximum.at(per_combo, position, column)
        else:
            per_combo = np.zeros(m)
            np.add.at(per_combo, position, column)
            per_combo /= np.bincount(position, minlength=m)
        out[name] = {
            "mean": float(per_combo.mean()) if m else float("nan"),
            "se": float(per_combo.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan"),
            "n": m,
        }
    return out


METRICS = tuple(generation_metrics(np.zeros(4), 1))  # the metric names in report order
STREAM_BATCH = 4096  # records voted and scored at once by `StreamedAggregate`


class StreamedAggregate:
    """`aggregate_records` over records that arrive in order, without holding them: the same values, bit for
    bit, for records whose combinations come in runs (every record of a combination next to each other, as a
    report's query orders them by combination).

    Records are voted and scored `STREAM_BATCH` at a time (grouped by shape, as `aggregate_records` groups
    them); a combination's max or mean over its rounds is carried across batches in record order; each finished
    combination's metrics go to a `SpilledColumns` file, which is reduced at the end in numpy's order. Memory
    holds one batch, whatever the number of records."""

    def __init__(self, k: int, across_rounds: str = "max"):
        from skillweave.metrics.streamed import SpilledColumns

        self.k, self.across_rounds = k, across_rounds
        self.columns = SpilledColumns(len(METRICS))
        self.pending: list[tuple[int, list[list[float]]]] = []
        self.open_combo, self.open_values, self.open_count = None, None, 0

    def add(self, combo, samples: list[list[float]]) -> None:
        if not samples:  # a round with no grade (a failed item) is left out
            return
        if len(samples) > 1:
            width = len(samples[0])
            for sample in samples:
                if len(sample) != width:  # ragged samples fail as they always did
                    np.asarray(samples, dtype=float)
        self.pending.append((combo, samples))
        if len(self.pending) >= STREAM_BATCH:
            self._flush()

    def _voted(self, records: list) -> np.ndarray:
        """The batch's votes and metrics, (records, metrics): one array when every record has the same shape (the
        usual case), else one per shape, as `aggregate_records` groups them."""
        try:
            voted = np.rint(np.asarray([samples for _, samples in records], dtype=float).mean(axis=1))
        except ValueError:  # records of different shapes
            voted = None
        values = np.zeros((len(records), len(METRICS)))
        if voted is not None and voted.ndim == 2:
            for j, column in enumerate(generation_metrics(voted, self.k).values()):
                values[:, j] = column
            return values
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, samples) in enumerate(records):
            groups.setdefault((len(samples), len(samples[0])), []).append(i)
        for members in groups.values():
            voted = np.rint(np.asarray([records[i][1] for i in members], dtype=float).mean(axis=1))
            for j, column in enumerate(generation_metrics(voted, self.k).values()):
                values[members, j] = column
        return values

    def _flush(self) -> None:
        records, self.pending = self.pending, []
        if not records:
            return
        values = self._voted(records)
        keys, position, last = [], [], object()
        for combo, _ in records:  # a combination's records are contiguous: a new key starts a new combination
            if combo != last or not keys:
                keys.append(combo)
                last = combo
            position.append(len(keys) - 1)
        position = np.array(position, dtype=np.intp)
        best = self.across_rounds == "max"
        per_combo = np.full((len(keys), len(METRICS)), -np.inf) if best else np.zeros((len(keys), len(METRICS)))
        counts = np.bincount(position, minlength=len(keys))
        if keys[0] == self.open_combo:  # the combination the last batch ended in goes on
            per_combo[0], counts[0] = self.open_values, counts[0] + self.open_count
        elif self.open_combo is not None:
            self._close()
        at = np.maximum.at if best else np.add.at
        for j in range(len(METRICS)):  # per column: numpy's fast path for `at`, in record order
            column = per_combo[:, j].copy()
            at(column, position, values[:, j])
            per_combo[:, j] = column
        if len(keys) > 1:
            self._write(per_combo[:-1], counts[:-1])
        self.open_combo, self.open_values, self.open_count = keys[-1], per_combo[-1].copy(), int(counts[-1])

    def _write(self, per_combo: np.ndarray, counts: np.ndarray) -> None:
        if self.across_rounds != "max":
            per_combo = per_combo / counts[:, None]
        self.columns.append(per_combo)

    def _close(self) -> None:
        self._write(self.open_values[None, :], np.array([self.open_count], dtype=np.intp))
        self.open_combo, self.open_values, self.open_count = None, None, 0

    def result(self) -> dict[str, dict[str, float]]:
        """`aggregate_records`' answer for every record added; closes the spilled values."""
        self._flush()
        if self.open_values is not None:
            self._close()
        with self.columns:
            m = self.columns.rows
            return {name: {"mean": mean, "se": se, "n": m}
                    for name, (mean, se) in zip(METRICS, self.columns.mean_se(), strict=True)}


def format_mean_se(metric: dict, failed: int = 0) -> str:
    """'0.500 ± 0.100'; one combination has no standard error; with none graded it says so and how many failed."""
    if not metric["n"]:
        return f"no graded items ({failed} failed)" if failed else "no graded items"
    if metric["n"] == 1:
        return f"{metric['mean']:.3f} (1 combination, no SE)"
    return f"{metric['mean']:.3f} ± {metric['se']:.3f}"


def run_report(store, run: dict, across_rounds: str = "max") -> dict:
    """Metrics per k for a Skill-Mix run (generated here or imported), as table rows and JSON."""
    per_k: dict[int, StreamedAggregate] = {}
    failed: dict[int, int] = {}
    from skillweave.store.reads import grade_samples

    # one statement, streamed: items come ordered by combination, each k's aggregate holds one batch of them
    for k, combo, _round, status, samples in grade_samples(store, run["id"], KIND_PREFIX):
        failed[k] = failed.get(k, 0) + (status == "failed")
        if status != "done":
            continue
        if k not in per_k:
            per_k[k] = StreamedAggregate(k, across_rounds)
        per_k[k].add(combo, samples)
    ks = sorted(set(per_k) | set(failed))
    by_k = {k: (per_k[k] if k in per_k else StreamedAggregate(k, across_rounds)).result() for k in ks}
    rows = []
    for k, metrics in by_k.items():
        row = {"k": k, "combinations": metrics["all_points_earned_binary"]["n"], "failed items": failed.get(k, 0)}
        for key, label in HEADLINE.items():
            row[label] = format_mean_se(metrics[key], failed.get(k, 0))
        rows.append(row)
    return {
        "run_id": run["id"], "pipeline": run["pipeline"], "across_rounds": across_rounds,
        "columns": ["k", "combinations", *HEADLINE.values(), "failed items"], "table": rows,
        "metrics": {str(k): {HEADLINE.get(n, n): v for n, v in m.items()} for k, m in by_k.items()},
        "failed_items": {str(k): v for k, v in failed.items()},
    }


def plot_report(report: dict, path: str) -> None:
    """Headline metrics (mean ± SE) against k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in report["metrics"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label in HEADLINE.values():
        means = [report["metrics"][str(k)][label]["mean"] for k in ks]
        ses = [np.nan_to_num(report["metrics"][str(k)][label]["se"]) for k in ks]
        ax.errorbar(ks, means, yerr=ses, marker="o", capsize=3, label=label)
    ax.set_xlabel("k (skills per combination)")
    ax.set_ylabel("score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(ks)
    ax.set_title(f"Skill-Mix: {report['run_id']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


KIND_PREFIX = "skillmix.text"
