"""MATH² metrics (docs/methods.md#math2-square-law): acceptance and drops per stage, evaluation accuracy per model, and the square
law Y ≈ X² (X = accuracy on source questions, Y = accuracy on generated two-skill questions).

Square-law outputs per model: relative drop (X − Y)/X and residual Y − X²; across models: the least-squares
scale c of Y = c·X² (c = 1 is the law itself), its R², and the log-log fit Y = a·X^b (expect b ≈ 2) on models
with 0 < X, Y. Intervals are binomial 95% (p ± 1.96·√(p(1−p)/n)).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from skillweave.store import queries
from skillweave.store.payload import drop_stage

KIND = "math2.question"
EVAL_KIND = "math2.eval"
STAGES = ("pair_check", "qgen", "validate", "refine", "consistency", "review")


def run_report(store, run: dict, **_: object) -> dict:
    """Outcome of every generated question (accepted / dropped at each stage / failed / waiting for review)."""
    from skillweave.pipelines.math2 import PIPELINE

    items = list(store.items(run["id"], kind=KIND))
    threads = PIPELINE.load_config(run["config"]).n
    status = Counter(i["status"] for i in items)
    drops = Counter(drop_stage(i) for i in items if i["status"] == "dropped")
    accepted = [i for i in items if i["status"] == "accepted"]
    rounds = [len(i["payload"].get("questions") or [1]) for i in accepted]
    edited = queries.review_count(store, run["id"], decision="edit")
    rows = [{"outcome": "accepted", "items": status.get("accepted", 0)}]
    rows += [{"outcome": f"dropped at {stage}", "items": drops.get(stage, 0)} for stage in STAGES]
    rows += [{"outcome": f"dropped at {s}", "items": n} for s, n in drops.items() if s not in STAGES]
    rows += [{"outcome": "failed (model error)", "items": status.get("failed", 0)},
             {"outcome": "waiting for review", "items": status.get("review", 0)},
             {"outcome": "in progress", "items": sum(n for s, n in status.items()
                                                     if s not in ("accepted", "dropped", "failed", "review"))}]
    total = max(len(items), 1)
    for row in rows:
        row["share"] = f"{row['items'] / total:.2f}"
    return {
        "run_id": run["id"], "pipeline": run["pipeline"], "columns": ["outcome", "items", "share"], "table": rows,
        "threads": threads, "questions": len(items), "accepted": len(accepted),
        "acceptance_rate": len(accepted) / len(items) if items else 0.0,
        "threads_with_accepted": len({i["combo_index"] for i in accepted}),
        "drops_by_stage": dict(drops), "status_counts": dict(status), "edited_by_reviewer": edited,
        "mean_rounds_accepted": float(np.mean(rounds)) if rounds else None,
    }


def plot_report(report: dict, path: str) -> None:
    """Bar chart of outcomes."""
    plt = _pyplot()
    rows = [r for r in report["table"] if r["items"]] or report["table"][:1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh([r["outcome"] for r in rows][::-1], [r["items"] for r in rows][::-1], color="#4477aa")
    ax.set_xlabel("questions")
    ax.set_title(f"MATH² outcomes: {report['run_id']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- square law ---------------------------------------------------------------------------------------
def square_law(points: list[dict]) -> dict:
    """Fit Y against X² for `[{model, x, y, n_x?, n_y?}]`: per-model residuals plus the scale and log-log fits."""
    rows = []
    for p in points:
        x, y = float(p["x"]), float(p["y"])
        rows.append({**p, "x2": x * x, "residual": y - x * x,
                     "relative_drop": (x - y) / x if x > 0 else None,
                     "position": "above" if y > x * x else "below" if y < x * x else "on"})
    xs = np.array([r["x"] for r in rows], dtype=float)
    ys = np.array([r["y"] for r in rows], dtype=float)
    fit: dict = {"models": len(rows)}
    if len(rows) and float(np.sum(xs ** 4)) > 0:
        c = float(np.sum(ys * xs ** 2) / np.sum(xs ** 4))  # least squares through the origin on X²
        fit["scale_c"] = c
        ss_res = float(np.sum((ys - xs ** 2) ** 2))
        ss_tot = float(np.sum((ys - ys.mean()) ** 2))
        fit["r2_square_law"] = 1 - ss_res / ss_tot if ss_tot > 0 else None
        fit["rmse_square_law"] = math.sqrt(ss_res / len(rows))
    positive = (xs > 0) & (ys > 0)
    if positive.sum() >= 2 and len(set(xs[positive])) >= 2:
        b, log_a = np.polyfit(np.log(xs[positive]), np.log(ys[positive]), 1)
        fit["loglog_a"], fit["loglog_b"] = float(math.exp(log_a)), float(b)
    return {"points": rows, "fit": fit}


def plot_square_law(result: dict, path: str, title: str = "MATH² square law") -> None:
    """Scatter of (X, Y) per model with the curve Y = X² (and the fitted Y = a·X^b when present)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    grid = np.linspace(0, 1, 101)
    ax.plot(grid, grid ** 2, "k--", lw=1, label="Y = X²")
    fit = result["fit"]
    if "loglog_b" in fit:
        ax.plot(grid, fit["loglog_a"] * grid ** fit["loglog_b"], color="#cc6677", lw=1,
                label=f"fit Y = {fit['loglog_a']:.2f}·X^{fit['loglog_b']:.2f}")
    for p in result["points"]:
        xerr = _ci(p["x"], p.get("n_x"))
        yerr = _ci(p["y"], p.get("n_y"))
        ax.errorbar(p["x"], p["y"], xerr=xerr, yerr=yerr, fmt="o", capsize=2, color="#4477aa")
        ax.annotate(str(p["model"]), (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("X: accuracy on source questions")
    ax.set_ylabel("Y: accuracy on MATH² questions")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ci(p: float, n: int | None) -> float | None:
    return 1.96 * math.sqrt(p * (1 - p) / n) if n else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- evaluation runs ----------------------------------------------------------------------------------
def eval_accuracies(store, run_id: str) -> list[dict]:
    """Per model: judged accuracy on the source (X) and MATH² (Y) sets, and the answer-match rate."""
    per: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for item in store.items(run_id, kind=EVAL_KIND):
        if item["status"] != "done":
            continue
        p = item["payload"]
        per.setdefault((p["model"], p["set"]), []).append((float(p["judged_correct"]), float(p["answer_match"])))
    models = list(dict.fromkeys(m for m, _ in per))
    rows = []
    for model in models:
        row = {"model": model}
        for name in ("x", "y"):
            scores = per.get((model, name), [])
            row[f"n_{name}"] = len(scores)
            row[name] = float(np.mean([s[0] for s in scores])) if scores else None
            row[f"{name}_answer_match"] = float(np.mean([s[1] for s in scores])) if scores else None
        rows.append(row)
    return rows


def eval_report(store, run: dict, **_: object) -> dict:
    rows = eval_accuracies(store, run["id"])
    failed = queries.item_count(store, run["id"], kind=EVAL_KIND, status="failed")
    complete = [r for r in rows if r["x"] is not None and r["y"] is not None]
    law = square_law(complete)
    by_model = {p["model"]: p for p in law["points"]}
    table = []
    for r in rows:
        law_row = by_model.get(r["model"], {})
        table.append({
            "model": r["model"], "X (source)": _fmt(r["x"], r["n_x"]), "Y (MATH²)": _fmt(r["y"], r["n_y"]),
            "X²": f"{law_row['x2']:.3f}" if law_row else "",
            "Y − X²": f"{law_row['residual']:+.3f}" if law_row else "",
            "relative drop": f"{law_row['relative_drop']:.1%}" if law_row.get("relative_drop") is not None else "",
        })
    return {"run_id": run["id"], "pipeline": run["pipeline"], "accuracies": rows, "square_law": law,
            "failed_items": failed,
            "columns": ["model", "X (source)", "Y (MATH²)", "X²", "Y − X²", "relative drop"], "table": table}


def plot_eval_report(report: dict, path: str) -> None:
    plot_square_law(report["square_law"], path, title=f"MATH² square law: {report['run_id']}")


def _fmt(p: float | None, n: int) -> str:
    return "" if p is None else f"{p:.3f} (n={n})"
