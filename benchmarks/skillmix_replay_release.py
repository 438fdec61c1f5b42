"""Replay the released Skill-Mix outputs through skillweave's prompts, parser and metrics, record by record.

Given a checkout of LeoYu/skill-mix (its `prompts/`, `skills.csv` and `test/` outputs), this converts the official
prompt files (`prompts import-skillmix`), loads the skills with skillweave's catalog loader (or, with --raw-definitions,
verbatim as upstream reads them), and for every
released generation record renders the two student turns and the grading prompt as a `run skillmix` would
(`agents.llm.build_messages`), asks the `replay:` recordings for each, and compares:

- records: the student requests found in the recordings, and the replies and extracted texts equal to upstream's;
- points: per grading sample, skillweave's parsed points (with the sentence override) against the imported
  official points;
- metrics: Full Marks / All Skills / Skill Fraction from the replayed points against the imported ones.

It does not depend on which combinations a sampler draws (it walks the released records), so it measures the
prompts, the replay matching, the parser and the metrics; the sampler is checked elsewhere.

    python benchmarks/skillmix_replay_release.py --checkout skill-mix [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from skillweave.agents.llm import build_messages
from skillweave.agents.replay import _roles, load_skillmix
from skillweave.catalog import load_skills_csv
from skillweave.errors import ModelCallError, SkillweaveError
from skillweave.metrics.skillmix import (
    HEADLINE,
    aggregate_records,
    count_sentences,
    extract_answer,
    grade_points,
    repair_length,
    sentence_limit,
    sentence_limit_words,
)
from skillweave.prompts import load_template
from skillweave.prompts.skillmix_import import import_skillmix_prompts
from skillweave.store.importers import find_records


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def raw_catalog(path: Path) -> dict:
    """Skill rows as upstream's get_skills_dict keeps them: names stripped, definitions and examples verbatim."""
    _, rows = _rows(path)
    return {r["skill"].strip(): {"name": r["skill"].strip(), "definition": r["definition"], "example": r["example"]}
            for r in rows if r.get("status") not in ("remove", "in review", "maybe")}


def measure(checkout: Path, raw_definitions: bool = False) -> dict:
    prompts = Path(tempfile.mkdtemp(prefix="skillmix-prompts-"))
    import_skillmix_prompts(checkout, prompts)
    student_t, judge_t = load_template("skillmix/student", prompts), load_template("skillmix/judge", prompts)
    catalog = raw_catalog(checkout / "skills.csv") if raw_definitions else \
        {s.name: s.as_dict() for s in load_skills_csv(checkout / "skills.csv")}
    records = find_records(checkout / "test")
    out: dict = {}
    for student in sorted({r["student"] for r in records}):
        recordings = load_skillmix(checkout / "test", student=student)
        c = {"records": 0, "student_found": 0, "student_equal": 0, "graded": 0, "judge_found": 0, "samples": 0,
             "points_equal": 0, "missing": []}
        official_sets: dict[int, list] = {}
        replayed_sets: dict[int, list] = {}
        for rec in (r for r in records if r["student"] == student):
            names, rows = _rows(rec["path"])
            user, assistant = _roles(names)
            graded = [_rows(g["path"])[1] for g in rec["graded"]]
            for i, row in enumerate(rows):
                c["records"] += 1
                skills = [s.strip() for s in row["skills"].split(",") if s.strip()]
                k = len(skills)
                values = {"skills": [catalog[s] for s in skills], "topic": row["topic"], "k": k,
                          "sentence_limit": sentence_limit_words(k), "shorten": False}
                outputs, ok = [], True
                for turn in range(2):
                    messages = build_messages(student_t, values, turn, outputs)
                    try:
                        (reply,) = recordings.answer(messages, 1)
                    except ModelCallError as exc:
                        ok = False
                        c["missing"].append(f"{rec['path'].parent.parent.name}/{student} row {i} turn {turn}: {exc}")
                        break
                    outputs.append(reply)
                if not ok:
                    continue
                c["student_found"] += 1
                text = extract_answer(outputs[1])
                c["student_equal"] += outputs == [row[f"{assistant}_0"], row[f"{assistant}_1"]] and \
                    text == row["text_1"]
                samples = [g[i] for g in graded if i < len(g)]
                if not samples:
                    continue
                c["graded"] += 1
                messages = build_messages(judge_t, {**{k_: v for k_, v in values.items() if k_ != "shorten"},
                                                    "text": text}, 0, [])
                try:
                    replies = recordings.answer(messages, len(samples))
                except ModelCallError as exc:
                    c["missing"].append(f"{rec['path'].parent.parent.name}/{student} row {i} judge: {exc}")
                    continue
                c["judge_found"] += 1
                official, replayed = [], []
                for g, reply in zip(samples, replies, strict=True):
                    points = repair_length([float(p) for p in g["points_0"].split(",") if p.strip()], k)
                    override = g.get("true_sentence_lim_pt_0")
                    points[k + 2] = float(override) if override not in (None, "") else \
                        float(count_sentences(row["text_1"]) <= sentence_limit(k))
                    mine, _ = grade_points(reply, k, text)
                    c["samples"] += 1
                    c["points_equal"] += mine == points
                    official.append(points)
                    replayed.append(mine)
                official_sets.setdefault(k, []).append((i, rec["round"], official))
                replayed_sets.setdefault(k, []).append((i, rec["round"], replayed))
        metrics = {}
        for k in sorted(official_sets):
            a, b = aggregate_records(official_sets[k], k), aggregate_records(replayed_sets[k], k)
            metrics[str(k)] = {label: {"official": round(a[key]["mean"], 4), "replayed": round(b[key]["mean"], 4)}
                               for key, label in HEADLINE.items()}
        out[student] = {**c, "missing": c["missing"][:5], "missing_count": len(c["missing"]), "metrics": metrics}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", required=True, help="a LeoYu/skill-mix checkout (prompts/, skills.csv, test/)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--raw-definitions", action="store_true",
                    help="use skills.csv definitions verbatim (upstream) instead of skillweave's catalog loader")
    args = ap.parse_args(argv)
    checkout = Path(args.checkout)
    if not (checkout / "skills.csv").is_file() or not (checkout / "test").is_dir():
        print(f"Error: '{checkout}' is not a LeoYu/skill-mix checkout (skills.csv, test/)", file=sys.stderr)
        return 2
    try:
        out = measure(checkout, args.raw_definitions)
    except SkillweaveError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for student, c in out.items():
        print(f"{student}: records {c['records']}, student requests found {c['student_found']}, replies+texts "
              f"equal {c['student_equal']}; graded {c['graded']}, grading requests found {c['judge_found']}; "
              f"points equal {c['points_equal']}/{c['samples']} samples")
        for k, m in c["metrics"].items():
            print(f"  k={k}: " + "; ".join(f"{label} {v['official']} official / {v['replayed']} replayed"
                                         for label, v in m.items()))
        for line in c["missing"]:
            print(f"  missing: {line[:200]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
