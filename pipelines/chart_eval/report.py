"""Reports for chart-eval runs: CharXiv-style stats from the store, a table, a plot and CharXiv result files.

The judge's score is the headline (as in CharXiv); the programmatic score of exact questions is a second
column, with the judge-programmatic agreement, so grader problems are visible next to the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from skillweave.charts.grading import accuracy_stats, agreement
from skillweave.pipelines.chart_eval.nodes import KINDS, PROGRAMMATIC

BREAKDOWNS = {"descriptive": ["By Category", "By Subject", "By Year", "By Subplot", "By Question"],
              "reasoning": ["By Answer Type", "By Source", "By Subject", "By Year", "By Subplot", "By Skills"]}


def score_rows(store, run_id: str) -> list[dict]:
    """One row per question: its breakdown fields, the headline score (-1/0/1/None) and the programmatic one.

    The headline is the judge's score, or the programmatic one for exact questions a `grading=programmatic`
    run did not send to the judge.
    """
    rows = []
    for kind in KINDS.values():
        for item in store.items(run_id, kind=kind):
            q = item["payload"]["question"]
            grades = {g["judge"]: g["score"] for g in store.grades(item["id"])}
            judge_score = next((v for k, v in grades.items() if k != PROGRAMMATIC), None)
            status = item["payload"].get("judge_status")
            if status is None:  # not graded yet (run interrupted): leave it out of every number
                judge_score = None
            elif status == "programmatic":  # grading=programmatic: the exact check is the score
                judge_score = grades.get(PROGRAMMATIC)
            rows.append({
                "key": q["key"], "mode": q["mode"], "qid": q.get("qid"), "inst_category": q.get("inst_category"),
                "qa_source": q.get("qa_source"), "subject": q["subject"], "year": q["year"],
                "num_subplots": q["num_subplots"], "skills": q.get("extra", {}).get("skills"),
                "answer": q.get("answer"), "question": q.get("question"), "response": item["payload"].get("response"),
                "extracted": item["payload"].get("judge_extracted"), "status": status,
                "score": None if judge_score is None else int(judge_score),
                PROGRAMMATIC: None if grades.get(PROGRAMMATIC) is None else int(grades[PROGRAMMATIC]),
            })
    return rows


def _table(judge: dict, programmatic: dict) -> list[dict]:
    rows = []

    def fmt(cell):
        return "" if not cell or cell.get("acc") is None else f"{cell['acc']:.2f}"

    for mode, stats in judge.items():
        prog = programmatic.get(mode, {})
        rows.append({"mode": mode, "breakdown": "Overall", "group": "all", "n": stats["N_valid"],
                     "judge acc": f"{stats['Overall Score']:.2f} ± {stats['CI95']:.2f}"
                     if stats["Overall Score"] is not None else "",
                     "programmatic acc": fmt({"acc": prog.get("Overall Score")}),
                     "invalid": stats["N_invalid"], "ungraded": stats["N_ungraded"]})
        for breakdown in BREAKDOWNS[mode]:
            for group, cell in stats.get(breakdown, {}).items():
                rows.append({"mode": mode, "breakdown": breakdown, "group": group, "n": cell["n"],
                             "judge acc": fmt(cell), "programmatic acc": fmt(prog.get(breakdown, {}).get(group)),
                             "invalid": "", "ungraded": ""})
    return rows


def run_report(store, run: dict, **_opts) -> dict:
    """Accuracy overall and by group, answer type, source, subject, year, #subplots (and skill pair)."""
    from skillweave.pipelines.chart_eval import PIPELINE

    settings = PIPELINE.load_config(run["config"])
    rows = score_rows(store, run["id"])
    judge = accuracy_stats(rows, "score")
    programmatic = accuracy_stats([r for r in rows if r[PROGRAMMATIC] is not None], PROGRAMMATIC)
    return {
        "run_id": run["id"], "pipeline": run["pipeline"], "model": settings.model, "judge": settings.judge,
        "data": settings.data,
        "columns": ["mode", "breakdown", "group", "n", "judge acc", "programmatic acc", "invalid", "ungraded"],
        "table": _table(judge, programmatic),
        "stats": {"judge": judge, "programmatic": programmatic},
        "agreement": {mode: agreement([r for r in rows if r["mode"] == mode]) for mode in judge},
    }


def plot_report(report: dict, path: str) -> None:
    """Accuracy per descriptive group and reasoning answer type, judge next to programmatic."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(m, b) for m, b in (("descriptive", "By Category"), ("reasoning", "By Answer Type"))
              if m in report["stats"]["judge"]]
    fig = Figure(figsize=(5 * max(1, len(panels)), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (mode, breakdown) in zip(axes, panels, strict=False):
        groups = list(report["stats"]["judge"][mode][breakdown])
        x = np.arange(len(groups))
        for offset, grader in ((-0.2, "judge"), (0.2, "programmatic")):
            cells = report["stats"][grader].get(mode, {}).get(breakdown, {})
            values = [(cells.get(g) or {}).get("acc") or 0.0 for g in groups]
            ax.bar(x + offset, values, width=0.4, label=grader)
        ax.set_xticks(x, labels=groups, rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        overall = report["stats"]["judge"][mode]["Overall Score"]
        ax.set_title(f"{mode}: {overall:.1f}% (judge)" if overall is not None else mode, fontsize=10)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def _official_stats(stats: dict, mode: str) -> dict:
    """Our stats of one mode in the layout the official `get_stats.py` writes: every breakdown the official
    templates list (an empty group is 0, as there), each cell a number (percent, 2 decimals), `N_valid` and
    `N_invalid` counts. Groups the official templates lack (e.g. the synthetic source) are kept as numbers;
    `N_ungraded` says how many rows were left out (no score), which the official file has no field for."""
    from skillweave.charts.charxiv import ANSWER_TYPES, DESCRIPTIVE_GROUPS, QA_SOURCES, SUBJECTS

    common = {"By Subject": list(SUBJECTS.values()), "By Year": ["2020", "2021", "2022", "2023"],
              "By Subplot": ["1 Subplot", "2-4 Subplots", "5+ Subplots"]}
    if mode == "descriptive":
        template = {"By Question": [f"Q{i}" for i in range(1, 20)], "By Category": list(DESCRIPTIVE_GROUPS),
                    **common}
    else:
        template = {"By Answer Type": list(ANSWER_TYPES.values()),
                    "By Source": [QA_SOURCES[i] for i in (1, 2, 3)], **common}
    out: dict = {"Overall Score": stats["Overall Score"] or 0}
    for breakdown, groups in template.items():
        cells = stats.get(breakdown, {})
        out[breakdown] = {g: (cells.get(g) or {}).get("acc") or 0 for g in groups}
        out[breakdown] |= {g: c["acc"] or 0 for g, c in cells.items() if g not in out[breakdown]}
    out |= {"N_valid": stats["N_valid"], "N_invalid": stats["N_invalid"], "Question Type": mode.capitalize(),
            "N_ungraded": stats["N_ungraded"]}
    return out


def _gen_entry(row: dict) -> dict:
    """One response as the official `generate.py` leaves it (the fields `evaluate.py` reads are there)."""
    response = row["response"] if row["response"] is not None else ""
    if row["mode"] == "descriptive":
        figure, _, index = row["key"].rpartition("_")
        return {"figure_id": _number(figure), "subq_idx": int(index), "qid": row["qid"], "response": response}
    return {"figure_id": _number(row["key"]), "inst_category": row["inst_category"],
            "raw_question": row["question"], "response": response}


def _number(text: str):
    return int(text) if str(text).isdigit() else text


def export_results(store, run: dict, out: str | Path) -> list[Path]:
    """CharXiv-named files the official evaluator reads: gen-{model}-{mode}_{split}.json (responses keyed as
    `generate.py` keys them, with `response`, and for reasoning `raw_question`), scores-… (`resp_id`,
    `extracted_answer`, `score` of every graded row; rows without a score are left out, not written as
    invalid) and stats-… (the official `get_stats.py` layout: numbers, every official group)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from skillweave.pipelines.chart_eval import PIPELINE

    settings = PIPELINE.load_config(run["config"])
    model = settings.model.replace("/", "_").replace(":", "_")
    split = settings.split
    rows = score_rows(store, run["id"])
    report = run_report(store, run)
    written = []
    for mode in ("descriptive", "reasoning"):
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        gen = {r["key"]: _gen_entry(r) for r in mine}
        scores = {r["key"]: {"resp_id": r["key"], "extracted_answer": r["extracted"] or "", "score": r["score"]}
                  for r in mine if r["score"] is not None}
        stats = _official_stats(report["stats"]["judge"][mode], mode)
        for prefix, data in (("gen", gen), ("scores", scores), ("stats", stats)):
            path = out / f"{prefix}-{model}-{mode}_{split}.json"
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
            written.append(path)
    return written
