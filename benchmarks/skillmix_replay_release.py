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

With `--db DB --student NAME` it instead checks a finished `run skillmix` (made as a user would, with
`--model replay:skillmix=...` and the converted prompts) against the released records of that student, end to
end: item (combination c, round r) is compared with row c of the r-th released round folder
`k{k}_s{seed}_v*_r*/{student}` (in round order) for the (skills in prompt order, topic) pair, both prompts,
both replies and both extracted texts, and each grade with the row of the graded folder of the same sample
index (reply and points, sentence point included); the run's `report` metrics are compared with the same
metrics computed from the official points and, where the checkout's `aggregate_metrics.py` runs (pandas), with
what that official script prints for the same rounds.

    python benchmarks/skillmix_replay_release.py --checkout skill-mix --db run.db --student gpt-4 [--run RUN]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from skillweave.agents.llm import build_messages
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
from skillweave.providers.replay import _GRADED_DIR, _roles, load_skillmix
from skillweave.store import Store
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
                    mine, _ = grade_points(reply, k, text, variant=judge_t.meta.get("reply_format", "table"))
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


def _official_points(row: dict, grade: dict, k: int) -> list[float]:
    """A released grade row's points as the official aggregation reads them: repaired to k+3, the sentence
    item replaced by `true_sentence_lim_pt_0` (recounted from text_1 when the column is absent)."""
    points = repair_length([float(p) for p in (grade.get("points_0") or "").split(",") if p.strip()], k)
    override = grade.get("true_sentence_lim_pt_0")
    points[k + 2] = float(override) if override not in (None, "") else \
        float(count_sentences(row["text_1"]) <= sentence_limit(k))
    return points


def official_script_metrics(checkout: Path, folders: list[Path], student: str, grader: str, k: int, seed: int,
                            n: int, grading_rounds: int, prompt: tuple[str, str]) -> dict | None:
    """Run the checkout's own aggregate_metrics.py on the given round folders (linked as r1..rG in a temporary
    experiment folder, since the script reads rounds 1..G) and parse its printed means and standard errors.
    None when the script cannot run here (e.g. pandas missing)."""
    import re
    import subprocess

    exp = Path(tempfile.mkdtemp(prefix="skillmix-official-exp-"))
    for g, folder in enumerate(folders, 1):
        target = exp / f"k{k}_s{seed}_v{prompt[0]}_r{g}"
        target.mkdir()
        (target / student).symlink_to(folder.resolve(), target_is_directory=True)
    cmd = [sys.executable, "aggregate_metrics.py", "--student_model_name", student, "--grader_model_name", grader,
           "--exp_path", str(exp), "--k_range", str(k), "--num_generation_rounds", str(len(folders)),
           "--num_generations_per_round", str(n), "--num_grading_rounds", str(grading_rounds),
           "--generation_prompt_version", prompt[0], "--grading_prompt_version", prompt[1], "--seed", str(seed)]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
    m = re.search(rf"\[ k = {k} \]\[ (.*) \]", proc.stdout)
    if proc.returncode != 0 or not m:
        return None
    values = re.findall(r"([-\d.na]+) ± ([-\d.na]+)", m.group(1))
    return {label: {"mean": float(a), "se": float(b)} for label, (a, b) in zip(HEADLINE.values(), values, strict=True)}


def compare_run(checkout: Path, db: Path, student: str, run_id: str | None = None) -> dict:
    """A `run skillmix` run in `db` against the released records of `student`, item by item (see the module
    docstring)."""
    from skillweave.metrics.skillmix import run_report

    store = Store(db)
    run = store.get_run(run_id or "latest")
    config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"])
    seed, ks = config["seed"], config["k"]
    out: dict = {"run": run["id"], "student": student, "per_k": {}}
    items = list(store.items(run["id"]))
    report = run_report(store, run)
    for k in ks:
        folders = sorted((p for p in (checkout / "test").glob(f"k{k}_s{seed}_v*_r*/{student}") if p.is_dir()),
                         key=lambda p: int(p.parent.name.rsplit("_r", 1)[1]))
        released = []
        for folder in folders:
            names, rows = _rows(folder / "records.csv")
            graded = sorted((folder / "graded").glob("by_*/records.csv"))
            released.append((names, rows, [_rows(g) for g in graded]))
        c = {"items": 0, "done": 0, "failed": 0, "released_rows": sum(len(r[1]) for r in released),
             "rounds_released": [f.parent.name for f in folders], "pairs_equal": 0, "records_reproduced": 0,
             "grades": 0, "grades_equal": 0, "points_equal": 0, "differences": []}
        official_sets: list = []
        for item in (i for i in items if i["k"] == k):
            c["items"] += 1
            c["done"] += item["status"] == "done"
            c["failed"] += item["status"] == "failed"
            where = f"combination {item['combo_index']} round {item['round']}"
            if item["round"] >= len(released) or item["combo_index"] >= len(released[item["round"]][1]):
                c["differences"].append(f"{where}: no released row")
                continue
            names, rows, graded = released[item["round"]]
            row = rows[item["combo_index"]]
            user, assistant = _roles(names)
            skills = [s.strip() for s in row["skills"].split(",") if s.strip()]
            pair = skills == item["skills"] and row["topic"] == item["topic"]
            c["pairs_equal"] += pair
            p = item["payload"] or {}
            same = {"pair": pair,
                    "prompts": [p.get("prompt_0"), p.get("prompt_1")] == [row[f"{user}_0"], row[f"{user}_1"]],
                    "replies": [p.get("output_0"), p.get("output_1")] == [row[f"{assistant}_0"],
                                                                          row[f"{assistant}_1"]],
                    "texts": [p.get("text_0"), p.get("text_1")] == [row["text_0"], row["text_1"]]}
            c["records_reproduced"] += all(same.values())
            if not all(same.values()):
                c["differences"].append(f"{where}: differs in {', '.join(x for x, v in same.items() if not v)}"
                                        + (f" ({item['status']}: {item.get('error')})" if item.get("error") else ""))
            samples = [(_roles(g_names), g[item["combo_index"]]) for g_names, g in graded
                       if item["combo_index"] < len(g)]
            if samples:
                official_sets.append((item["combo_index"], item["round"],
                                      [_official_points(row, g, k) for _, g in samples]))
            for grade in store.grades(item["id"]):
                c["grades"] += 1
                if grade["sample_index"] >= len(samples):
                    c["differences"].append(f"{where}: grade sample {grade['sample_index']} has no released row")
                    continue
                (_, g_assistant), g = samples[grade["sample_index"]]
                c["grades_equal"] += grade["raw"] == g[f"{g_assistant}_0"]
                c["points_equal"] += grade["points"] == _official_points(row, g, k)
        official = aggregate_records(official_sets, k)
        mine = report["metrics"].get(str(k), {})
        c["metrics"] = {label: {"run": round(mine[label]["mean"], 4) if label in mine else None,
                                "run_se": round(mine[label]["se"], 4) if label in mine else None,
                                "official_points": round(official[key]["mean"], 4),
                                "official_points_se": round(official[key]["se"], 4)}
                        for key, label in HEADLINE.items()}
        grading = graded_folder(folders)
        script = official_script_metrics(
            checkout, folders, student, grading["grader"], k, seed, config["n"], len(released[0][2]),
            (folders[0].parent.name.split("_v", 1)[1].rsplit("_r", 1)[0], grading["gradprompt"])) if grading else None
        for label in c["metrics"]:
            c["metrics"][label]["official_script"] = script[label] if script else None
        c["differences"] = c["differences"][:10]
        out["per_k"][str(k)] = c
    return out


def graded_folder(folders: list[Path]) -> dict | None:
    """Grader and grading prompt of the first graded folder (`by_<grader>_on_text_1_<r>_<prompt>`)."""
    for folder in folders:
        for graded in sorted((folder / "graded").glob("by_*_on_text_1_*")):
            m = _GRADED_DIR.match(graded.name)
            if m:
                return {"grader": m["grader"], "gradprompt": m["gradprompt"]}
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", required=True, help="a LeoYu/skill-mix checkout (prompts/, skills.csv, test/)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--raw-definitions", action="store_true",
                    help="use skills.csv definitions verbatim (upstream) instead of skillweave's catalog loader")
    ap.add_argument("--db", help="check a finished `run skillmix` in this store against the release instead")
    ap.add_argument("--student", help="with --db: the released student folder the run replayed (e.g. gpt-4)")
    ap.add_argument("--run", default=None, help="with --db: the run id (default: latest)")
    args = ap.parse_args(argv)
    checkout = Path(args.checkout)
    if not (checkout / "skills.csv").is_file() or not (checkout / "test").is_dir():
        print(f"Error: '{checkout}' is not a LeoYu/skill-mix checkout (skills.csv, test/)", file=sys.stderr)
        return 2
    if args.db and not args.student:
        print("Error: --db needs --student (the released student folder the run replayed)", file=sys.stderr)
        return 2
    try:
        if args.db:
            if not Path(args.db).is_file():
                raise SkillweaveError(f"store '{args.db}' not found")
            return _print_run(compare_run(checkout, Path(args.db), args.student, args.run), args.json)
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


def _print_run(out: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    for k, c in out["per_k"].items():
        print(f"run {out['run']} vs released {out['student']} (k={k}, rounds {', '.join(c['rounds_released'])}): "
              f"items {c['items']} ({c['done']} done, {c['failed']} failed), released rows {c['released_rows']}; "
              f"(skills, topic) pairs equal {c['pairs_equal']}; records reproduced {c['records_reproduced']}; "
              f"grade replies equal {c['grades_equal']}/{c['grades']}, points equal {c['points_equal']}/{c['grades']}")
        for label, m in c["metrics"].items():
            script = m["official_script"]
            print(f"  {label}: run {m['run']} ± {m['run_se']}; official points {m['official_points']} ± "
                  f"{m['official_points_se']}; official aggregate_metrics.py "
                  + (f"{script['mean']} ± {script['se']}" if script else "not run"))
        for line in c["differences"]:
            print(f"  difference: {line[:200]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
