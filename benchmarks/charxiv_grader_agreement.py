"""Agreement of skillweave's programmatic CharXiv grader with the official judge's decisions.

Reads a checkout of the released evaluations: the CharXiv data folder (`descriptive_val.json`,
`reasoning_val.json`) and a folder of released model results (`gen-<model>-<mode>_val.json` with the
responses, `scores-<model>-<mode>_val.json` with the GPT-4o judge's 0/1 decisions), as published by the
CharXiv authors next to their dataset (`existing_evaluations/`). For every question the program can grade
exactly (descriptive templates with a number, yes/no or layout gold; Number-in-Chart / Number-in-General
reasoning) it compares the program's score with the judge's, skipping the judge's -1 (unparsed) rows.

It prints the agreement of the current grader and, measured in the same run on the same rows, of the earlier
rule (text after a 'answer...:' marker with a colon, else the last line; its first number), so the two rates
are comparable.

    python benchmarks/charxiv_grader_agreement.py --data CharXiv/data --results CharXiv-hf/existing_evaluations
    python benchmarks/charxiv_grader_agreement.py --data ... --results ... --json --disagreements 20
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from skillweave.charts.grading import EXACT_ON_ANY_FOLDER, compare, extract_final_answer, parse_number

_RESULT = re.compile(r"^scores-(?P<model>.+)-(?P<mode>descriptive|reasoning)_(?P<split>\w+)\.json$")


def earlier_rule(method: str, response: str, gold: str) -> int:
    """The rule the grader used before: colon-only marker, else last line; first number; loose N/A."""
    text = (response or "").strip()
    marks = list(re.finditer(r"(?:final\s+answer|answer)\s*(?:is)?\s*[:：]\s*", text, re.I))
    if marks:
        tail = text[marks[-1].end():].strip()
        answer = tail.splitlines()[0] if tail else ""
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        answer = lines[-1] if lines else ""
    answer = answer.strip().strip("*_`\"' ").rstrip(".")
    loose_na = re.compile(r"\b(not\s+applicable|n/?a|none|no\s+(?:title|label|legend|colorbar|lines?|ticks?))\b", re.I)
    if gold.strip() == "Not Applicable":
        return int(bool(loose_na.search(answer)) and parse_number(answer) is None)
    if loose_na.search(answer) and not loose_na.search(gold):
        return 0
    if method == "number":
        a, b = parse_number(answer), parse_number(gold)
        return int(a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b)))
    return compare(method, answer, gold)


def exact_rows(data_dir: Path, results_dir: Path):
    """(model, mode, key, method, response, gold, judge score) for every exactly gradable released row."""
    for path in sorted(results_dir.glob("scores-*.json")):
        m = _RESULT.match(path.name)
        if not m:
            continue
        gen_path = path.with_name(path.name.replace("scores-", "gen-", 1))
        data_path = data_dir / f"{m['mode']}_{m['split']}.json"
        if not gen_path.exists() or not data_path.exists():
            print(f"skipping {path.name}: {gen_path.name} or {data_path} missing", file=sys.stderr)
            continue
        scores, gen, data = (json.loads(p.read_text()) for p in (path, gen_path, data_path))
        for fig_key, entry in data.items():
            fid = str(entry.get("figure_id", fig_key))
            if m["mode"] == "descriptive":
                for i, qid in enumerate(entry["qids"]):
                    method, key = EXACT_ON_ANY_FOLDER.get(int(qid)), f"{fid}_{i}"
                    if method and key in scores and key in gen:
                        yield (m["model"], "descriptive", key, method, gen[key].get("response", ""),
                               str(entry["answers"][i]), scores[key]["score"])
            elif int(entry["inst_category"]) in (3, 4) and fid in scores and fid in gen:
                yield (m["model"], "reasoning", fid, "number", gen[fid].get("response", ""), str(entry["answer"]),
                       scores[fid]["score"])


def measure(data_dir: Path, results_dir: Path, disagreements: int = 0) -> dict:
    per: dict = defaultdict(lambda: {"n": 0, "now": 0, "before": 0, "judge_invalid": 0})
    shown = []
    for model, mode, key, method, response, gold, judge in exact_rows(data_dir, results_dir):
        cell = per[(model, mode)]
        if judge not in (0, 1):
            cell["judge_invalid"] += 1
            continue
        now = compare(method, extract_final_answer(response), gold)
        cell["n"] += 1
        cell["now"] += int(now == judge)
        cell["before"] += int(earlier_rule(method, response, gold) == judge)
        if now != judge and len(shown) < disagreements:
            shown.append({"model": model, "mode": mode, "key": key, "gold": gold, "judge": judge, "program": now,
                          "extracted": extract_final_answer(response), "response_tail": response[-160:]})
    rows = [{"model": m, "mode": mode, **c, "rate_now": round(c["now"] / c["n"], 4) if c["n"] else None,
             "rate_before": round(c["before"] / c["n"], 4) if c["n"] else None} for (m, mode), c in sorted(per.items())]
    total = {k: sum(r[k] for r in rows) for k in ("n", "now", "before", "judge_invalid")}
    if total["n"]:
        total |= {"rate_now": round(total["now"] / total["n"], 4), "rate_before": round(total["before"] / total["n"], 4)}
    return {"files": rows, "total": total, "disagreements": shown}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="CharXiv data folder (descriptive_val.json, reasoning_val.json)")
    ap.add_argument("--results", required=True, help="folder with released gen-*.json and scores-*.json files")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--disagreements", type=int, default=0, help="list up to this many rows where they differ")
    args = ap.parse_args(argv)
    data_dir, results_dir = Path(args.data), Path(args.results)
    for folder in (data_dir, results_dir):
        if not folder.is_dir():
            print(f"Error: '{folder}' is not a folder", file=sys.stderr)
            return 2
    out = measure(data_dir, results_dir, args.disagreements)
    if not out["files"]:
        print(f"Error: no scores-<model>-<mode>_<split>.json with its gen- file under '{results_dir}'", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'model':32} {'mode':12} {'n':>6} {'now':>8} {'before':>8} judge -1")
    for r in out["files"]:
        print(f"{r['model'][:32]:32} {r['mode']:12} {r['n']:6d} {r['rate_now']:8.2%} {r['rate_before']:8.2%} "
              f"{r['judge_invalid']}")
    t = out["total"]
    print(f"{'all':32} {'':12} {t['n']:6d} {t.get('rate_now', 0):8.2%} {t.get('rate_before', 0):8.2%} "
          f"{t['judge_invalid']}")
    for d in out["disagreements"]:
        print(json.dumps(d, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
