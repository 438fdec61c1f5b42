"""Import the official Skill-Mix output layout (LeoYu/skill-mix) into the store, so `report` recomputes metrics.

Layout (docs/methods.md#skillmix-records): `{root}/k{k}_s{seed}_v{genprompt}_r{round}/{student}/records.csv` (generations) and
`.../{student}/graded/by_{grader}_on_text_1_{gradround}_{gradprompt}/records.csv` (grades, row i grades
generation row i). Each graded row holds per grading sample j `points_j` (comma-joined floats, sometimes
truncated: repaired to k+3) and `true_sentence_lim_pt_j` (the programmatic sentence point, which overrides
item k+2; recounted from `text_1` when absent). One store run per (student, grader); combinations are
identified by (k, row) across rounds, since the same seed gives the same combinations in every round.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from skillweave.errors import UsageError
from skillweave.metrics.skillmix import (
    KIND_PREFIX,
    count_sentences,
    parse_point_list,
    parse_table,
    repair_length,
    sentence_limit,
)
from skillweave.store import Store

_GEN_DIR = re.compile(r"^k(?P<k>\d+)_s(?P<seed>\d+)_v(?P<prompt>[^_]+)_r(?P<round>\d+)$")
_GRADED_DIR = re.compile(r"^by_(?P<grader>.+)_on_text_1_(?P<gradround>\d+)_(?P<gradprompt>.+)$")


def _read_csv(path: Path) -> list[dict]:
    from skillweave.catalog.textfiles import read_csv

    return read_csv(path, "records", field_limit=sys.maxsize)  # model texts can exceed 128 KiB


def _split_skills(value: str) -> list[str]:
    """Skills are joined by comma + spaces + newline upstream; fall back to plain commas."""
    parts = re.split(r",[ \t]*\n", value) if "\n" in value else value.split(",")
    return [p.strip() for p in parts if p.strip()]


def find_records(root: Path) -> list[dict]:
    """Every generation records.csv under root with its k, seed, prompt, round, student and graded files."""
    found = []
    for path in sorted(root.rglob("records.csv")):
        if "graded" in path.parts:
            continue
        student_dir = path.parent
        match = _GEN_DIR.match(student_dir.parent.name)
        if not match:
            continue
        graded = []
        for gpath in sorted((student_dir / "graded").glob("*/records.csv")):
            gmatch = _GRADED_DIR.match(gpath.parent.name)
            if gmatch:
                graded.append({"path": gpath, **gmatch.groupdict()})
        found.append({"path": path, "student": student_dir.name, "k": int(match["k"]), "seed": int(match["seed"]),
                      "prompt": match["prompt"], "round": int(match["round"]), "graded": graded})
    return found


def import_skillmix(store: Store, root: str | Path, grader: str | None = None) -> list[str]:
    """Import every (student, grader) pair under root as one run; returns the run ids."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"'{root}' is not a folder in the Skill-Mix output layout")
    records = find_records(root)
    if not records:
        raise UsageError(f"no '<k..._s..._v..._r...>/<student>/records.csv' files under '{root}'")
    groups: dict[tuple[str, str], list[tuple[dict, dict | None]]] = {}
    for rec in records:
        grades = [g for g in rec["graded"] if grader is None or g["grader"] == grader] or [None]
        for g in grades:
            groups.setdefault((rec["student"], g["grader"] if g else "ungraded"), []).append((rec, g))
    run_ids = []
    for (student, grader_name), members in sorted(groups.items()):
        config = {"imported_from": str(root.resolve()), "student": student, "grader": grader_name,
                  "k": sorted({m[0]["k"] for m in members}), "rounds": sorted({m[0]["round"] for m in members}),
                  "import_digest": _digest(root, student, grader_name, members)}
        with store.transaction():  # all or nothing: no half-imported run
            existing = _existing_import(store, config)
            if existing:  # same source, same content (also after an import killed once it had committed)
                run_ids.append(existing)
                continue
            run_id = store.create_run("skillmix", config, command=f"skillweave import skillmix {root}")
            for rec, graded in members:
                _import_one(store, run_id, rec, graded, grader_name)
            store.set_run_status(run_id, "done")
        run_ids.append(run_id)
    return run_ids


def _digest(root: Path, student: str, grader: str, members: list[tuple[dict, dict | None]]) -> str:
    """A hash of what one imported run is made of: its files' paths (relative to root) and bytes."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{student}\0{grader}\0".encode())
    paths = sorted({p for rec, graded in members for p in (rec["path"], graded and graded["path"]) if p})
    for path in paths:
        h.update(f"{path.relative_to(root)}\0".encode())
        h.update(hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
    return h.hexdigest()


def _existing_import(store: Store, config: dict) -> str | None:
    row = store._one("SELECT id FROM runs WHERE pipeline = 'skillmix' AND json_extract(config, '$.import_digest') = ? "
                     "AND json_extract(config, '$.imported_from') = ? ORDER BY created_at LIMIT 1",
                     [config["import_digest"], config["imported_from"]])
    return row["id"] if row else None


def _import_one(store: Store, run_id: str, rec: dict, graded: dict | None, grader: str) -> None:
    k = rec["k"]
    rows = _read_csv(rec["path"])
    grade_rows = _read_csv(graded["path"]) if graded else []
    if len(grade_rows) > len(rows):  # fewer is an unfinished grading run: row i still grades generation i
        raise UsageError(f"{graded['path']} has {len(grade_rows)} rows but {rec['path']} has {len(rows)}")
    for i, row in enumerate(rows):
        texts = {key: value for key, value in row.items() if key and key.startswith("text_")}
        final_text = texts[max(texts, key=lambda key: int(key.split("_")[1]))] if texts else ""
        item_id = store.ensure_item(
            run_id, KIND_PREFIX, k * 1_000_000 + i, rec["round"], k=k, skills=_split_skills(row.get("skills", "")),
            topic=row.get("topic"), status="done" if i < len(grade_rows) else "generated",
            payload={**texts, "student": rec["student"], "source": str(rec["path"])},
        )
        if i >= len(grade_rows):
            continue
        g = grade_rows[i]
        j = 0
        while f"points_{j}" in g:
            raw_points = [float(p) for p in g[f"points_{j}"].split(",") if p.strip()]
            points = repair_length(raw_points, k)
            override = g.get(f"true_sentence_lim_pt_{j}")
            points[k + 2] = float(override) if override not in (None, "") else \
                float(count_sentences(final_text) <= sentence_limit(k))
            status = "ok" if len(raw_points) == k + 3 else ("empty" if not raw_points else "repaired")
            store.add_grade(item_id, run_id, j, judge=grader, raw=g.get(f"assistant_{j}", ""), points=points,
                            score=sum(points), parse_status=status)
            j += 1


# ---- re-parse the official grader replies with skillweave's parser ------------------------------------------
def rubric_labels(k: int) -> list[str]:
    return [f"skill {i + 1}" for i in range(k)] + ["topic", "makes sense", "sentence limit"]


def _own_parse(reply: str, grading_prompt: str) -> list[float]:
    """skillweave's parser for the reply style the grading prompt asked for: a rubric table when the prompt
    asks for one (the official 'gpt' prompt), else one 'Point(s) earned: x' line per item."""
    if "table" in (grading_prompt or "").lower():
        return parse_table(reply)[0]
    return parse_point_list(reply, marker="earned:")[0]


def reparse_skillmix(root: str | Path, grader: str | None = None, examples: int = 5) -> dict:
    """Re-parse every graded reply (`assistant_j`) under root with skillweave's parser and compare the points,
    rubric item by rubric item, with the official parsed points (`points_j`, before the sentence override).

    Returns {'samples', 'records_agree', 'length_agree', 'by_k': {k: [{'item', 'n', 'agree', 'rate'}...]},
    'disagreements': [...]} where a record agrees when all k+3 points are equal (both sides length-repaired).
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"'{root}' is not a folder in the Skill-Mix output layout")
    samples = records_agree = length_agree = 0
    per_item: dict[int, list[list[int]]] = {}
    shown: list[dict] = []
    for rec in find_records(root):
        for graded in rec["graded"]:
            if grader is not None and graded["grader"] != grader:
                continue
            k = rec["k"]
            cells = per_item.setdefault(k, [[0, 0] for _ in range(k + 3)])
            for row_index, row in enumerate(_read_csv(graded["path"])):
                j = 0
                while f"points_{j}" in row:
                    official_raw = [float(p) for p in row[f"points_{j}"].split(",") if p.strip()]
                    own_raw = _own_parse(row.get(f"assistant_{j}", ""), row.get(f"user_{j}") or row.get("user_0", ""))
                    official, own = repair_length(official_raw, k), repair_length(own_raw, k)
                    samples += 1
                    length_agree += len(official_raw) == len(own_raw)
                    records_agree += official == own
                    for i in range(k + 3):
                        cells[i][0] += 1
                        cells[i][1] += official[i] == own[i]
                    if official != own and len(shown) < examples:
                        shown.append({"file": str(graded["path"]), "row": row_index, "sample": j,
                                      "official": official_raw, "skillweave": own_raw})
                    j += 1
    if not samples:
        raise UsageError(f"no graded records (graded/by_<grader>_on_text_1_*/records.csv) under '{root}'"
                         + (f" for grader '{grader}'" if grader else ""))
    by_k = {str(k): [{"item": label, "n": n, "agree": agree, "rate": round(agree / n, 4)}
                     for label, (n, agree) in zip(rubric_labels(k), cells, strict=True)]
            for k, cells in sorted(per_item.items())}
    return {"samples": samples, "records_agree": records_agree, "records_rate": round(records_agree / samples, 4),
            "length_agree": length_agree, "by_k": by_k, "disagreements": shown}
