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
    python benchmarks/charxiv_grader_agreement.py --data CharXiv/data --gold-only   # no released outputs needed
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from skillweave.charts.grading import (
    EXACT_ON_ANY_FOLDER,
    compare,
    extract_final_answer,
    numbers_equal,
    parse_number,
)

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
        return int(a is not None and b is not None and numbers_equal(a, b))
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


def near_miss(gold: str) -> str | None:
    """A wrong answer one digit away from the gold (its last digit + 1), or the other yes/no."""
    if gold == "Not Applicable":
        return "3"
    if gold in ("Yes", "No"):
        return "No" if gold == "Yes" else "Yes"
    digits = list(re.finditer(r"\d", gold))
    if not digits:
        return None
    i = digits[-1].start()
    return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1:]


def gold_check(data_dir: Path, split: str = "val") -> dict:
    """Needs only the data folder: every exactly gradable gold answer, written back as 'Final answer: <gold>'
    and 'The answer is <gold>.', must be accepted; the same with a one-digit near miss must be rejected."""
    rows = []
    for fig in json.loads((data_dir / f"descriptive_{split}.json").read_text()).values():
        rows += [(EXACT_ON_ANY_FOLDER[q], str(a)) for q, a in zip(fig["qids"], fig["answers"], strict=True)
                 if q in EXACT_ON_ANY_FOLDER and a is not None]
    rows += [("number", str(q["answer"])) for q in json.loads((data_dir / f"reasoning_{split}.json").read_text()).values()
             if int(q["inst_category"]) in (3, 4) and q.get("answer") is not None]
    out = {"questions": len(rows)}
    for name, grade in (("now", lambda m, r, g: compare(m, extract_final_answer(r), g)), ("before", earlier_rule)):
        accepted = rejected = misses = 0
        wrong = []
        for method, gold in rows:
            accepted += sum(grade(method, f, gold) == 1 for f in (f"Final answer: {gold}", f"The answer is {gold}."))
            miss = near_miss(gold)
            if miss is None:
                continue
            for reply in (f"Final answer: {miss}", f"The answer is {miss}."):
                misses += 1
                ok = grade(method, reply, gold) == 0
                rejected += ok
                if not ok and (gold, miss) not in wrong:
                    wrong.append((gold, miss))
        out[name] = {"gold_accepted": accepted, "gold_n": 2 * len(rows), "near_miss_rejected": rejected,
                     "near_miss_n": misses, "accepted_near_misses": wrong[:10]}
    return out


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
    ap.add_argument("--results", help="folder with released gen-*.json and scores-*.json files")
    ap.add_argument("--gold-only", action="store_true",
                    help="only the check that needs no released outputs: gold answers accepted, near misses rejected")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--disagreements", type=int, default=0, help="list up to this many rows where they differ")
    args = ap.parse_args(argv)
    data_dir = Path(args.data)
    if args.gold_only:
        if not (data_dir / "descriptive_val.json").is_file():
            print(f"Error: '{data_dir}' holds no descriptive_val.json", file=sys.stderr)
            return 2
        out = gold_check(data_dir)
        if args.json:
            print(json.dumps(out, indent=2))
            return 0
        for name in ("now", "before"):
            r = out[name]
            print(f"{name:6} {out['questions']} exactly gradable questions: gold accepted {r['gold_accepted']}/"
                  f"{r['gold_n']}, near misses rejected {r['near_miss_rejected']}/{r['near_miss_n']}; accepted near "
                  f"misses: {r['accepted_near_misses']}")
        return 0
    if not args.results:
        print("Error: --results is required unless --gold-only is given", file=sys.stderr)
        return 2
    results_dir = Path(args.results)
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
