"""Chart-eval benchmark: generator throughput and coverage, programmatic-grader robustness, pipeline batching.

Prints ratios measured in this one run (no timed assertions):
  1. synthetic generator: charts per second, template coverage, share of 'Not Applicable' answers, share of
     charts with a two-skill reasoning question;
  2. programmatic grader on answer variants built from every gold answer: correct answers in another
     notation (must score 1) and near-miss wrong answers (must score 0), per comparison method;
  3. the `chart-eval` graph with a scripted oracle model and the fake judge: questions per second, judge calls
     per descriptive question (batching), judge/programmatic agreement.

Run: .venv/bin/python benchmarks/chart_eval.py [--charts 40] [--pipeline-charts 20]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from skillweave.charts.charxiv import NOT_APPLICABLE, load_release
from skillweave.charts.grading import compare, exact_method, parse_number
from skillweave.charts.synthetic import generate_synthetic_set

TREND_PARAPHRASE = {"increases": "goes up", "decreases": "goes down",
                    "increases then decreases": "rises and then falls", "decreases then increases": "dips then climbs"}
TREND_OPPOSITE = {"increases": "decreases", "decreases": "increases",
                  "increases then decreases": "decreases then increases",
                  "decreases then increases": "increases then decreases"}


def variants(method: str, gold: str) -> tuple[str, str]:
    """(a correct answer in other words or notation, a near-miss wrong answer)."""
    if gold == NOT_APPLICABLE:
        return "There is none here, so: not applicable", "3"
    if method == "text_or_number":
        method = "number" if parse_number(gold) is not None and gold.replace(".", "").lstrip("-").isdigit() else "text"
    if method == "number":
        value = parse_number(gold)
        other = f"{value:.3e}" if value else "0.000"
        return f"about {other}", f"{value + abs(value) * 0.1 + 1:g}"
    if method == "yesno":
        return ("Yes, two of them cross" if gold == "Yes" else "No, they never meet"), ("No" if gold == "Yes" else "Yes")
    if method == "layout":
        rows, cols = gold.split(" by ")
        wrong = f"{cols} by {rows}" if rows != cols else f"{int(rows) + 1} by {cols}"
        return f"{rows} x {cols}", wrong
    if method == "trend":
        return TREND_PARAPHRASE[gold], TREND_OPPOSITE[gold]
    parts = [p.strip() for p in gold.split(",")]
    if method == "list":
        wrong = ", ".join([parts[1], parts[0], *parts[2:]]) if len(parts) > 1 else f"{gold}, Other"
        return ",".join(p.upper() for p in parts), wrong
    if method == "set":
        wrong = ", ".join(parts[:-1]) if len(parts) > 1 else f"{gold}, Other"
        return ", ".join(reversed(parts)), wrong
    return f'"{gold.upper()}"', f"{gold} (extra)"


def bench_generator(n: int, folder: Path) -> list:
    start, cpu = time.perf_counter(), time.process_time()
    summary = generate_synthetic_set(folder, n, seed=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    questions = load_release(folder).questions()
    desc = [q for q in questions if q.mode == "descriptive"]
    reas = [q for q in questions if q.mode == "reasoning"]
    print(f"[1] generator: {n} charts in {seconds:.1f} s wall ({cpu:.1f} s CPU) = {n / seconds:.2f} charts/s, "
          f"{cpu / n:.2f} CPU s/chart "
          f"({summary['descriptive_questions']} descriptive, {summary['reasoning_questions']} reasoning)")
    print(f"    templates covered: {len({q.qid for q in desc})}/19; 'Not Applicable' answers: "
          f"{sum(q.answer == NOT_APPLICABLE for q in desc) / len(desc):.2%}; charts with a reasoning question: "
          f"{len(reas) / n:.2%}")
    kinds = Counter(q.extra.get("template") for q in reas)
    print(f"    reasoning compositions: {dict(sorted(kinds.items()))}")
    return questions


def bench_grader(questions: list) -> None:
    by_method: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for q in questions:
        method = exact_method(q)
        right, wrong = variants(method, q.answer)
        by_method[method].append((compare(method, right, q.answer), 1 - compare(method, wrong, q.answer)))
    total = [x for pairs in by_method.values() for x in pairs]
    print(f"[2] programmatic grader on {len(total)} gold answers x 2 variants: accepts correct variants "
          f"{sum(a for a, _ in total) / len(total):.2%}, rejects near misses {sum(b for _, b in total) / len(total):.2%}")
    for method, pairs in sorted(by_method.items()):
        print(f"    {method:15s} n={len(pairs):3d}  correct accepted {sum(a for a, _ in pairs) / len(pairs):.2%}  "
              f"wrong rejected {sum(b for _, b in pairs) / len(pairs):.2%}")


def bench_pipeline(n: int, folder: Path, db: Path) -> None:
    from click.testing import CliRunner

    from skillweave.cli import cli
    from skillweave.pipelines.chart_eval.report import run_report
    from skillweave.providers.core import FakeProvider, message_text, register_provider
    from skillweave.store import Store

    generate_synthetic_set(folder, n, seed=1)
    gold = {}
    for q in load_release(folder).questions():
        digest = hashlib.sha1(base64.b64encode(Path(q.image_path).read_bytes())).hexdigest()
        gold[(digest, q.question)] = q.answer

    def oracle(request):
        image = next(p for p in request.messages[-1]["content"] if p.get("type") == "image")
        question = message_text(request.messages[-1]).split("Question: ", 1)[1].split("\n", 1)[0]
        return f"Final answer: {gold[(hashlib.sha1(image['data'].encode()).hexdigest(), question)]}"

    register_provider("fake:oracle", FakeProvider("oracle", script=oracle), max_concurrency=8)
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["--db", str(db), "run", "chart-eval", "--data", str(folder), "--model",
                                      "fake:oracle", "--judge", "fake"], catch_exceptions=False)
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    store = Store(db)
    run = store.get_run("latest")
    items = list(store.items(run["id"]))
    n_desc = sum(i["kind"] == "chart.descriptive" for i in items)
    judge_desc = sum("extract_answer_T1" in (c["request"] or "")
                     for c in store.db["llm_calls"].rows_where("run_id = ? and role = 'judge'", [run["id"]]))
    report = run_report(store, run)
    judge, prog = report["stats"]["judge"], report["stats"]["programmatic"]
    print(f"[3] pipeline (oracle model, fake judge): {len(items)} questions in {seconds:.1f} s = "
          f"{len(items) / seconds:.1f} questions/s; descriptive judge calls per question {judge_desc / n_desc:.2f} "
          f"(batches of <= 5 per template)")
    print(f"    accuracy judge/programmatic: descriptive {judge['descriptive']['Overall Score']:.1f}/"
          f"{prog['descriptive']['Overall Score']:.1f}, reasoning {judge['reasoning']['Overall Score']:.1f}/"
          f"{prog['reasoning']['Overall Score']:.1f}; agreement "
          + ", ".join(f"{m} {a['rate']:.2%}" for m, a in report["agreement"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=40)
    parser.add_argument("--pipeline-charts", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        questions = bench_generator(args.charts, Path(tmp) / "gen")
        bench_grader(questions)
        bench_pipeline(args.pipeline_charts, Path(tmp) / "pipe", Path(tmp) / "bench.db")


if __name__ == "__main__":
    main()
