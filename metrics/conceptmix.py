"""ConceptMix metrics (docs/methods.md#conceptmix-grading): all-correct proportion per k, pooled concept accuracy, category breakdown.

Design choices:
- Input is one record per graded image: `{"k", "questions": [{"category", "answer": 0|1, "error": bool}]}`.
  A grading error is an answer of 0 (upstream skipped such questions, which inflates scores); the number of
  errors is reported next to every score so it is never hidden.
- 95% intervals are the normal approximation p ± 1.96·√(p(1−p)/n) with n = #images for the ConceptMix score
  and n = #questions for the pooled concept accuracy (questions of one image are correlated, so that interval
  is too narrow; we say so rather than hide it). Bounds are clipped to [0, 1]; `half_width` is unclipped.
- The category breakdown is computed at k=1 by default (one object plus one concept): per category, the
  accuracy of its questions and the all-correct rate of the images whose extra concept is that category.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KIND = "conceptmix.prompt"  # item kind of a ConceptMix prompt (agents.conceptmix creates them)
Z95 = 1.96


def binomial_ci(successes: int, n: int, z: float = Z95) -> dict[str, float | int | None]:
    """Proportion with its normal-approximation interval; None values when n = 0."""
    if n == 0:
        return {"p": None, "n": 0, "half_width": None, "low": None, "high": None}
    p = successes / n
    half = z * math.sqrt(p * (1 - p) / n)
    return {"p": p, "n": n, "half_width": half, "low": max(0.0, p - half), "high": min(1.0, p + half)}


def _answers(record: dict) -> list[int]:
    return [int(q["answer"]) for q in record["questions"]]


def conceptmix_scores(records: Iterable[dict], breakdown_k: int | None = 1) -> dict[str, Any]:
    """Scores per k, overall, and the category breakdown (at `breakdown_k`, or over all k when None)."""
    records = [r for r in records if r.get("questions")]
    by_k: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_k[int(r["k"])].append(r)
    per_k = {}
    for k in sorted(by_k):
        rows = by_k[k]
        all_yes = sum(all(_answers(r)) for r in rows)
        answers = [a for r in rows for a in _answers(r)]
        per_k[k] = {
            "k": k,
            "images": len(rows),
            "proportion_all_correct": binomial_ci(all_yes, len(rows)),
            "concept_accuracy": binomial_ci(sum(answers), len(answers)),
            "grading_errors": sum(bool(q.get("error")) for r in rows for q in r["questions"]),
        }
    return {"per_k": per_k, "by_category": category_breakdown(records, breakdown_k)}


def category_breakdown(records: Iterable[dict], k: int | None = 1) -> dict[str, dict]:
    """Per category: question accuracy, and all-correct rate of images whose non-object concepts are that category."""
    questions: dict[str, list[int]] = defaultdict(list)
    images: dict[str, list[int]] = defaultdict(list)
    for r in records:
        if k is not None and int(r["k"]) != k:
            continue
        for q in r["questions"]:
            questions[q["category"]].append(int(q["answer"]))
        others = {q["category"] for q in r["questions"] if q["category"] != "object"}
        if len(others) == 1:
            images[others.pop()].append(int(all(_answers(r))))
    return {
        cat: {"question_accuracy": binomial_ci(sum(v), len(v)),
              "images_all_correct": binomial_ci(sum(images.get(cat, [])), len(images.get(cat, [])))}
        for cat, v in sorted(questions.items())
    }


def scores_table(scores: dict) -> list[dict]:
    """Flat rows for printing: one per k."""
    rows = []
    for k, s in scores["per_k"].items():
        pac, acc = s["proportion_all_correct"], s["concept_accuracy"]
        rows.append({"k": k, "images": s["images"], "score": _fmt(pac), "concept_acc": _fmt(acc),
                     "questions": acc["n"], "grading_errors": s["grading_errors"]})
    return rows


def category_table(scores: dict) -> list[dict]:
    return [{"category": cat, "question_acc": _fmt(v["question_accuracy"]), "questions": v["question_accuracy"]["n"],
             "images_all_correct": _fmt(v["images_all_correct"]), "images": v["images_all_correct"]["n"]}
            for cat, v in scores["by_category"].items()]


def _fmt(ci: dict) -> str:
    return "-" if ci["p"] is None else f"{ci['p']:.3f} ± {ci['half_width']:.3f}"


def plot_scores(series: dict[str, dict], path: str | Path) -> Path:
    """Draw the ConceptMix score against k, one line (with 95% error bars) per labelled score dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, scores in series.items():
        ks = [k for k, s in scores["per_k"].items() if s["proportion_all_correct"]["p"] is not None]
        ps = [scores["per_k"][k]["proportion_all_correct"]["p"] for k in ks]
        errs = [scores["per_k"][k]["proportion_all_correct"]["half_width"] for k in ks]
        ax.errorbar(ks, ps, yerr=errs, marker="o", capsize=3, label=label)
    ax.set_xlabel("k (concepts beyond the base object)")
    ax.set_ylabel("ConceptMix score (all questions yes)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- store reports ------------------------------------------------------------------------------------
def graded_records(store, run_id: str) -> list[dict]:
    """One metrics record per graded prompt of a run (grades come from the store, errors count as 0)."""
    from skillweave.catalog.conceptmix import question_categories
    from skillweave.store.reads import items_with_grades

    records = []
    for item in items_with_grades(store, run_id, kind=KIND, status="done"):  # one statement, not one per item
        categories = item["payload"].get("categories") or []
        questions = item["payload"].get("questions") or []
        per_question = question_categories(questions, categories)
        grades = {g["sample_index"]: g for g in item["grades"]}
        rows = []
        for i, q in enumerate(questions):
            if not q.strip() or i not in grades:
                continue
            g = grades[i]
            rows.append({"category": per_question[i], "answer": int(g["score"] or 0),
                         "error": g["parse_status"] == "error"})
        records.append({"k": item["k"], "item_id": item["id"], "questions": rows})
    return records


def run_report(store, run: dict, breakdown_k: int | None = 1, **_options: Any) -> dict:
    """The ConceptMix report of a run: the per-k table plus JSON fields (scores, categories, failures)."""
    from skillweave.pipelines.conceptmix import PIPELINE

    settings = PIPELINE.load_config(run["config"])
    scores = conceptmix_scores(graded_records(store, run["id"]), breakdown_k=breakdown_k)
    failed: dict[int, int] = defaultdict(int)
    steps: dict[str, int] = defaultdict(int)  # from item payloads, so a resumed run never counts twice
    for item in store.items(run["id"], kind=KIND):
        payload = item["payload"]
        if item["status"] == "failed":
            failed[item["k"]] += 1
        steps["resamples"] += len(payload.get("resample_reasons") or [])
        steps["rule_refine"] += payload.get("refine_source") == "rule" and settings.refine != "rule"
        steps["template_questions"] += (payload.get("questions_source") == "template"
                                        and settings.questions != "template")
    table = scores_table(scores)
    for row in table:
        row["failed_items"] = failed.get(row["k"], 0)
    for k in sorted(set(failed) - set(scores["per_k"])):
        table.append({"k": k, "images": 0, "score": "-", "concept_acc": "-", "questions": 0, "grading_errors": 0,
                      "failed_items": failed[k]})
    return {
        "columns": ["k", "images", "score", "concept_acc", "questions", "grading_errors", "failed_items"],
        "table": sorted(table, key=lambda r: r["k"]),
        "category_columns": ["category", "question_acc", "questions", "images_all_correct", "images"],
        "category_table": category_table(scores),
        "scores": scores,
        "failed_items": dict(failed),
        "fallbacks_and_resamples": {key: n for key, n in steps.items() if n},
        "label": f"{run['config'].get('image_model')} / {run['config'].get('grader')}",
    }


def plot_report(report: dict, path: str | Path) -> Path:
    return plot_scores({report.get("label") or "run": report["scores"]}, path)
