"""Exports: store items -> training rows in standard shapes and formats, with a dataset card beside them.

Design choices
- One intermediate record, `Example` (instruction, input, output, optional rejected response, metadata), built
  per pipeline from item payloads, then shaped: Alpaca `instruction/input/output`, chat `messages`, TRL
  `prompt/completion`, TRL `prompt/chosen/rejected`. Field names stay standard so TRL, `trainers.data` and other
  readers need no mapping; every row carries `item_id` (and `run_id`) so training, selection and unlearning
  can trace a row back to the store.
- Instruct-SkillMix items export `instruction/input/output` plus the released keys (`orig_instruction`,
  `skills_joined_str`, `query_type` = the bare type name, as the release writes it; its definition goes in
  `query_definition`); a shirker item keeps its real response as `orig_output`.
- Skill-Mix items (the Zhao et al. recipe, docs/methods.md#skill-composition-data): prompt = the stored TURN0 request, target = the graded
  revised answer `text_1`; metadata `k, skills, topic, category_split, round, score, full_marks`. Points are
  voted per rubric item over grading samples (numpy rint, as the metrics do); Full Marks = every voted point 1.
- Preference pairs exist where the store holds two responses of different quality for one prompt: an
  Instruct-SkillMix shirker (chosen = real response, rejected = shirker response) and Skill-Mix generation
  rounds of one combination with different voted scores (chosen = best round, rejected = worst; ties skipped);
  also any payload with `prompt`, `responses` [a, b] and `preferred` (0 or 1).
- MATH² items export question -> full solution (the reviewed values: an edit is already in the payload), with
  `answer`, `reviewed_by` and `review_changes` ({field: {before, after}}) columns.
- Filters: status (default `finished`: each pipeline's finished status, `accepted` for MATH², else `done`), voted score threshold, full marks, reviewed only (latest review approve/edit;
  an edit's `changes` replace the exported fields), exclude shirkers, k. Items whose latest review is a reject
  never export. Every drop is counted by reason and written into the card.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from skillweave.collector import fewer_collections
from skillweave.errors import UsageError
from skillweave.store import Store, queries
from skillweave.store.reads import gc_paused, items_with_grades

APPROVED = {"approve", "approved", "accept", "accepted", "edit", "edited"}
REJECTED = {"reject", "rejected"}


FINISHED = "finished"  # the default --status: each pipeline's own finished status
FINISHED_STATUS = {"math2": "accepted"}  # MATH² items end `accepted` (after review); every other pipeline `done`


def finished_status(pipeline: str) -> str:
    return FINISHED_STATUS.get(pipeline, "done")


@dataclass
class ExportFilters:
    status: str | None = FINISHED
    min_score: float | None = None
    full_marks: bool = False
    reviewed_only: bool = False
    exclude_shirkers: bool = False
    k: list[int] | None = None

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}


@dataclass
class Example:
    item_id: str
    run_id: str
    instruction: str
    output: str
    input: str = ""
    rejected: str | None = None
    meta: dict = field(default_factory=dict)
    prompt_versions: list[str] = field(default_factory=list)  # of the item(s) behind the row, for the card


# ---- grades and reviews ----------------------------------------------------------------------------------
def voted_points(store: Store, item_id: str) -> list[float] | None:
    """Per-item majority vote over grading samples (None when the item has no grades)."""
    return _vote(store.grades(item_id))


def _vote(grades: list[dict]) -> list[float] | None:
    return _vote_points([g["points"] for g in grades])


def _vote_points(points: list[list]) -> list[float] | None:
    """The vote over each grading sample's points (empty samples left out)."""
    samples = [p for p in points if p]
    if not samples:
        return None
    # the mean of each rubric point over samples, rounded half to even (numpy's rint), in plain Python: per item
    # numpy costs more than the arithmetic (export reads 10^5 items)
    n = len(samples)
    if n == 1:  # one sample: each point rounded as it is (x / 1 == x)
        return list(map(float, map(round, map(float, samples[0]))))
    if n == 2:  # sum() starts from 0, which changes only the sign of a zero: round() gives 0 for either
        return [float(round((float(a) + float(b)) / 2)) for a, b in zip(samples[0], samples[1], strict=False)]
    # zip stops at the shortest sample, as the vote always did; the floats are added in the same order
    return [float(round(sum(map(float, column)) / n)) for column in zip(*samples, strict=False)]


def latest_review(store: Store, item_id: str) -> dict | None:
    return queries.latest_review(store, item_id)


# ---- per-pipeline examples ---------------------------------------------------------------------------------
def _instruct_example(item: dict, run: dict, points=None, review=None) -> Example | None:
    p = item["payload"]
    if not p.get("instruction") or not p.get("output"):
        return None
    return Example(item["id"], run["id"], p["instruction"], p["output"], p.get("input", ""), meta={
        "orig_instruction": p.get("orig_instruction", p["instruction"]), "skills_joined_str": p.get("skills_joined_str"),
        # the release's records keep the query type's bare name; "name: definition" only fills the prompt
        "query_type": p.get("query_str"), "query_str": p.get("query_str"),
        "query_definition": p.get("query_definition"), "k": item["k"], "skills": item["skills"],
        "shirker": bool(p.get("shirker")), "orig_output": p.get("orig_output"), "set": p.get("set"),
        "generator": p.get("generator"),
    })


def _skillmix_example(item: dict, run: dict, points: list[float] | None, review=None) -> Example | None:
    p = item["payload"]
    prompt = p.get("prompt_0") or p.get("model_input_0")  # imported records.csv rows may carry model_input_0
    if not prompt or not p.get("text_1"):
        return None
    k = item["k"]
    full = points is not None and len(points) == k + 3 and all(v == 1 for v in points)
    return Example(item["id"], run["id"], prompt, p["text_1"], meta={
        "k": k, "skills": item["skills"], "topic": item["topic"], "round": item["round"],
        "combo_index": item["combo_index"], "category_split": run["config"].get("split", "all"),
        "train_categories": run["config"].get("train_categories"),
        "score": sum(points) if points is not None else None, "full_marks": full, "shirker": False,
    })


def _math2_example(item: dict, run: dict, points=None, review: dict | None = None) -> Example | None:
    """A MATH² question: prompt = the question, completion = the full solution (its \\boxed answer inside), with
    the answer and what review changed, by whom, as columns. The payload already holds a reviewer's edits."""
    p = item["payload"]
    if not p.get("question") or not p.get("solution"):
        return None
    changes = {k: v for k, v in ((review or {}).get("changes") or {}).items() if not k.startswith("_")}
    return Example(item["id"], run["id"], p["question"], p["solution"], meta={
        "answer": p.get("answer"), "skills": [r["name"] for r in p.get("skill_rows") or []] or item.get("skills"),
        "k": item.get("k"), "reviewed_by": p.get("reviewed_by") or (review or {}).get("reviewer"),
        "review_changes": {f: {"before": c.get("before"), "after": c.get("after")} for f, c in changes.items()
                           if isinstance(c, dict)} or None,
        "shirker": False,
    })


def _generic_example(item: dict, run: dict, points=None, review=None) -> Example | None:
    p = item["payload"]
    instruction = p.get("instruction") or p.get("prompt") or p.get("question")
    output = p.get("output") or p.get("response") or p.get("answer")
    if not instruction or not output or not isinstance(output, str):
        return None
    return Example(item["id"], run["id"], instruction, output, p.get("input", "") or "",
                   meta={"k": item.get("k"), "skills": item.get("skills"), "shirker": bool(p.get("shirker"))})


def _example(item: dict, run: dict, points, review: dict | None = None) -> Example | None:
    """The run's pipeline spec says how its items become examples (`Pipeline.export`); Skill-Mix items in
    other runs export as Skill-Mix; anything else through the generic instruction/response keys."""
    return _item_builder(_run_builder(run), item)(item, run, points, review=review)


def _run_builder(run: dict):
    """The run's pipeline exporter (None: chosen per item); looked up once per run, not once per item."""
    from skillweave.pipelines import find_pipeline

    spec = find_pipeline(run["pipeline"])
    return spec.exporter() if spec is not None else None


def _item_builder(builder, item: dict):
    if builder is None:
        return _skillmix_example if item["kind"].startswith("skillmix.") else _generic_example
    return builder


def _apply_review(example: Example, review: dict | None) -> None:
    changes = (review or {}).get("changes") or {}
    if changes:
        for key in ("instruction", "prompt"):
            if changes.get(key):
                example.instruction = changes[key]
        for key in ("output", "response", "text_1", "text"):
            if changes.get(key):
                example.output = changes[key]
    if review:
        example.meta["review"] = review["decision"]


# ---- collection ----------------------------------------------------------------------------------------------
def collect(store: Store, run_ids: list[str], filters: ExportFilters, *, pairs: bool = False
            ) -> tuple[list[Example], Counter, list[dict], int]:
    """Examples (or preference pairs) of the runs that pass the filters; drops counted by reason."""
    dropped: Counter = Counter()
    runs = _runs(store, run_ids)
    kept: list[Example] = []
    seen = [0]
    for run in runs:
        candidates = list(_candidates(store, run, filters, dropped, seen))
        if pairs:
            kept += _pairs(run, candidates, dropped)
            continue
        for _item, example in candidates:
            if filters.exclude_shirkers and example.meta.get("shirker"):
                dropped["shirker response"] += 1
                continue
            kept.append(example)
    return kept, dropped, runs, seen[0]


def stream_examples(store: Store, runs: list[dict], filters: ExportFilters, dropped: Counter, seen: list[int]):
    """`collect`'s examples (not pairs) one at a time, in the same order, holding no item once its example is
    made; `dropped` and `seen[0]` are complete when the iteration ends, their reasons in `collect`'s order (the
    shirker drops of a run are counted after its other drops, as `collect` counts them)."""
    for run in runs:
        shirkers = 0
        for _item, example in _candidates(store, run, filters, dropped, seen):
            if filters.exclude_shirkers and example.meta.get("shirker"):
                shirkers += 1
                continue
            yield example
        if shirkers:
            dropped["shirker response"] += shirkers


def _runs(store: Store, run_ids: list[str]) -> list[dict]:
    runs = [store.get_run(r) for r in run_ids]
    if len({r["id"] for r in runs}) != len(runs):
        raise UsageError(f"run ids {run_ids} name the same run twice")
    return runs


def _candidates(store: Store, run: dict, filters: ExportFilters, dropped: Counter, seen: list[int]):
    """(item, example) for each item of the run that passes the filters (all but --exclude-shirkers), in order."""
    builder = _run_builder(run)
    wanted = finished_status(run["pipeline"]) if filters.status == FINISHED else filters.status
    # one statement per run streams the items with their grades and latest review (not three per item)
    for item in items_with_grades(store, run["id"], grades="points", reviews=True):
        seen[0] += 1
        if wanted and item["status"] != wanted:
            dropped[f"status {item['status']} (not {wanted})"] += 1
            continue
        if filters.k and item.get("k") not in filters.k:
            dropped[f"k {item.get('k')} not in {filters.k}"] += 1
            continue
        review = item["latest_review"]
        decision = (review or {}).get("decision", "").lower()
        if decision in REJECTED:
            dropped["rejected by a reviewer"] += 1
            continue
        if filters.reviewed_only and decision not in APPROVED:
            dropped["not approved by a reviewer"] += 1
            continue
        points = _vote_points(item["grade_points"])
        example = _item_builder(builder, item)(item, run, points, review=review)
        if example is None:
            dropped[f"{item['kind']}: no instruction/response in the payload"] += 1
            continue
        _apply_review(example, review)
        example.prompt_versions = item["prompt_versions"]
        score = example.meta.get("score")
        if filters.min_score is not None and (score is None or score < filters.min_score):
            dropped[f"score below {filters.min_score} (or ungraded)"] += 1
            continue
        if filters.full_marks and not example.meta.get("full_marks"):
            dropped["not full marks"] += 1
            continue
        yield item, example


def _pairs(run: dict, candidates: list[tuple[dict, Example]], dropped: Counter) -> list[Example]:
    out: list[Example] = []
    groups: dict[tuple, list[tuple[dict, Example]]] = defaultdict(list)
    for item, example in candidates:
        payload = item["payload"]
        if example.meta.get("shirker") and payload.get("orig_output"):
            out.append(Example(example.item_id, run["id"], example.instruction, payload["orig_output"],
                               example.input, rejected=example.output, meta={**example.meta, "pair": "shirker"},
                               prompt_versions=example.prompt_versions))
        elif isinstance(payload.get("responses"), list) and payload.get("preferred") in (0, 1):
            good, bad = payload["responses"][payload["preferred"]], payload["responses"][1 - payload["preferred"]]
            out.append(Example(example.item_id, run["id"], example.instruction, good, rejected=bad,
                               meta={**example.meta, "pair": "preferred"}, prompt_versions=example.prompt_versions))
        elif example.meta.get("score") is not None and "combo_index" in example.meta:
            groups[(example.meta["k"], example.meta["combo_index"])].append((item, example))
        else:
            dropped["no preference pair for this item"] += 1
    for members in groups.values():
        members.sort(key=lambda m: (-m[1].meta["score"], m[0]["round"]))
        best, worst = members[0][1], members[-1][1]
        if len(members) < 2 or best.meta["score"] == worst.meta["score"]:
            dropped["Skill-Mix combination without rounds of different score"] += len(members)
            continue
        out.append(Example(best.item_id, run["id"], best.instruction, best.output, rejected=worst.output, meta={
            **best.meta, "pair": "skillmix_rounds", "rejected_item_id": worst.item_id,
            "rejected_score": worst.meta["score"]},
            prompt_versions=list(dict.fromkeys([*best.prompt_versions, *worst.prompt_versions]))))
    return out


def export_runs(store: Store, run_ids: list[str], out: str | Path, *, fmt: str = "jsonl", shape: str = "alpaca",
                filters: ExportFilters | None = None, system: str | None = None, overwrite: bool = False,
                command: str = "") -> dict:
    """Collect, shape and write rows of one or more runs; write the dataset card; return a summary."""
    from skillweave.export.writers import card_path, check_destination, render_card, shape_rows, write_rows

    filters = filters or ExportFilters()
    out = Path(out)
    protect = () if store.path == ":memory:" else (Path(store.path),)
    check_destination(out, fmt, overwrite=overwrite, protect=protect)  # before any work, and again when writing
    if fmt == "jsonl" and shape != "preference":
        return _export_jsonl_stream(store, run_ids, out, shape, filters, system, overwrite, command, protect)
    with gc_paused():  # every example and row is kept until written: no collector walks over them meanwhile
        examples, dropped, runs, seen = collect(store, run_ids, filters, pairs=shape == "preference")
        if not examples:
            reasons = "; ".join(f"{n} {r}" for r, n in dropped.most_common()) or "the runs have no items"
            raise UsageError(f"no rows to export from {', '.join(run_ids)} after filters ({reasons})")
        rows = shape_rows(examples, shape, system=system)
    summary = {
        "out": str(out), "format": fmt, "shape": shape, "rows": len(rows), "items_seen": seen,
        "runs": [r["id"] for r in runs], "filters": filters.describe(), "dropped": dict(dropped.most_common()),
        "card": str(card_path(out, fmt)),
    }
    # written with the collector on (Parquet and datasets writers may leave cyclic garbage behind)
    write_rows(rows, out, fmt, overwrite=overwrite, card=render_card(store, runs, examples, summary, command),
               protect=protect)
    return summary


def _export_jsonl_stream(store: Store, run_ids: list[str], out: Path, shape: str, filters: ExportFilters,
                         system: str | None, overwrite: bool, command: str, protect: tuple[Path, ...]) -> dict:
    """`export_runs` for JSONL rows of one example each: examples are shaped and written as the items are read,
    so memory does not grow with the runs; the same bytes as writing the whole list (export/writers.py)."""
    from skillweave.export.writers import (
        ExampleCounts,
        card_path,
        render_card,
        shape_rows,
        write_jsonl_stream,
    )

    shape_rows([], shape)  # an unknown shape is refused before anything is read
    dropped: Counter = Counter()
    seen = [0]
    runs = _runs(store, run_ids)
    counts = ExampleCounts()
    summary: dict = {}

    def finish(rows: int) -> str:  # after the last row, before anything is renamed into place
        if not rows:
            reasons = "; ".join(f"{n} {r}" for r, n in dropped.most_common()) or "the runs have no items"
            raise UsageError(f"no rows to export from {', '.join(run_ids)} after filters ({reasons})")
        summary.update({
            "out": str(out), "format": "jsonl", "shape": shape, "rows": rows, "items_seen": seen[0],
            "runs": [r["id"] for r in runs], "filters": filters.describe(), "dropped": dict(dropped.most_common()),
            "card": str(card_path(out, "jsonl")),
        })
        return render_card(store, runs, counts, summary, command)

    examples = counts.counting(stream_examples(store, runs, filters, dropped, seen))
    with fewer_collections(20_000):  # nothing is kept per row: the collector has little to find
        write_jsonl_stream(examples, out, shape, system=system, overwrite=overwrite, protect=protect, finish=finish)
    return summary
