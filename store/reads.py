"""Set-based reads for reports, exports and listings: one SQL statement per run, rows streamed.

`Store.items` plus `Store.grades(item)` and a review lookup per item cost three statements per item; on a
10^5-item run that is most of a report's time. `items_with_grades` returns the same item dicts in the same order
(combination index, round, kind), each carrying its grading samples and, on request, its latest review, from a
single statement whose correlated subqueries run inside SQLite (indexes on `grades.item_id` and
`reviews.item_id`), and yields them as the cursor reads them, so memory does not grow with the run.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager

from skillweave.store import jload

REVIEW_COLUMNS = ("id", "item_id", "run_id", "reviewer", "decision", "reason", "changes", "created_at")


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a whole run's rows are built and kept (export holds every
    example until it writes): each collection walks every live object, and with 10^5 items kept those walks cost
    more than building the rows (1.7 of 4.4 CPU s reading a 10^5-item run into a list). Rows hold no reference
    cycles, so nothing waits for the collector; it runs again afterwards as before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def items_with_grades(store, run_id: str, *, kind: str | None = None, status: str | None = None,
                      grades: bool | str = True, reviews: bool = False, payload: bool = True) -> Iterator[dict]:
    """Items of a run as `Store.items` gives them, plus `grades` (the item's grade rows by sample index, points
    decoded, as `Store.grades` gives them) and `latest_review` (the newest review with `changes` decoded, or
    None) when asked for. `payload=False` leaves out `payload` and `prompt_versions` (reports that only count).
    `grades="points"` gives `grade_points` instead: only each grade's points ([] where not JSON), by sample index.

    The JSON columns of a chunk of rows are decoded in one `json.loads` call (one array of all their texts), not
    one call per column and item; should a text not be JSON on its own, the chunk is decoded item by item, which
    raises the same error as before."""
    columns = ["i.*"] if payload else [
        "i.id", "i.run_id", "i.kind", "i.combo_index", "i.round", "i.k", "i.skills", "i.topic", "i.status",
        "i.error", "i.parent_id", "i.created_at", "i.updated_at"]
    if grades == "points":
        columns.append(
            "(SELECT json_group_array(CASE WHEN json_valid(g.points) THEN json(g.points) END)"
            " FROM (SELECT points FROM grades g WHERE g.item_seq = i.rowid AND g.item_id = i.id"
            " ORDER BY g.sample_index, g.rowid) g) AS _grades")
    elif grades:  # points nested as JSON (not JSON text inside JSON), so each item's grades decode in one call
        columns.append(
            "(SELECT json_group_array(json_array(g.sample_index,"
            " CASE WHEN json_valid(g.points) THEN json(g.points) END, g.score, g.parse_status, g.judge))"
            " FROM (SELECT * FROM grades g WHERE g.item_seq = i.rowid AND g.item_id = i.id"
            " ORDER BY g.sample_index, g.rowid) g) AS _grades")
    if reviews:
        fields = ", ".join(f"r.{c}" for c in REVIEW_COLUMNS)
        columns.append(f"(SELECT json_array({fields}) FROM reviews r WHERE r.item_id = i.id"
                       " ORDER BY r.created_at DESC LIMIT 1) AS _review")
    clauses, args = ["i.run_id = ?"], [run_id]
    for column, value in (("kind", kind), ("status", status)):
        if value is not None:
            clauses.append(f"i.{column} = ?")
            args.append(value)
    cursor = store.db.conn.execute(
        f"SELECT {', '.join(columns)} FROM items i WHERE {' AND '.join(clauses)} "
        "ORDER BY i.combo_index, i.round, i.kind", args)
    names = [d[0] for d in cursor.description]
    n_item = len(names) - bool(grades) - reviews  # the item's own columns come first
    item_names = names[:n_item]
    # the JSON columns decoded per item (position in the row, what an empty value stands for)
    decoded = [(names.index("skills"), "[]")]
    if payload:
        decoded += [(names.index("payload"), "{}"), (names.index("prompt_versions"), "[]")]
    if grades:
        decoded.append((n_item, "[]"))
    width = len(decoded)
    while True:
        chunk = cursor.fetchmany(1024)
        if not chunk:
            return
        texts = [row[i] or empty for row in chunk for i, empty in decoded]
        try:
            values_json = json.loads("[" + ",".join(texts) + "]")
        except ValueError:
            values_json = []
        if len(values_json) != len(texts):  # some text is not one JSON value: decode one by one, as before
            values_json = [json.loads(t) for t in texts]
        for n, values in enumerate(chunk):
            item = dict(zip(item_names, values, strict=False))  # stops at the item's columns; the packed ones follow
            # decoded in place: the same keys in the same order as `_decode_item` gives (a copy per item cost more)
            base = n * width
            item["skills"] = values_json[base]
            if payload:
                item["payload"] = values_json[base + 1]
                item["prompt_versions"] = values_json[base + 2]
            if grades == "points":
                samples = values_json[base + width - 1]
                item["grade_points"] = [[] if p is None else p for p in samples] if None in samples else samples
            elif grades:
                item["grades"] = [
                    {"sample_index": g[0], "points": [] if g[1] is None else g[1], "score": g[2],
                     "parse_status": g[3], "judge": g[4]}
                    for g in values_json[base + width - 1]
                ]
            if reviews:
                packed = values[-1]
                review = dict(zip(REVIEW_COLUMNS, json.loads(packed), strict=True)) if packed else None
                if review is not None:
                    review["changes"] = jload(review["changes"], {})
                item["latest_review"] = review
            yield item


def grade_samples(store, run_id: str, kind: str) -> Iterator[tuple]:
    """(k, combo_index, round, status, samples) per item of `kind`, in `items_with_grades` order: what a Skill-Mix
    report needs and nothing else. `samples` is the item's grading points by sample index, exactly as
    `items_with_grades(...)["grades"][i]["points"]` gives them ([] where the stored points are not JSON); each
    item's points are one JSON array built by SQLite, and a chunk of items is decoded in one call."""
    cursor = store.db.conn.execute(
        "SELECT i.k, i.combo_index, i.round, i.status,"
        " (SELECT json_group_array(CASE WHEN json_valid(g.points) THEN json(g.points) END)"
        "  FROM (SELECT points FROM grades g WHERE g.item_seq = i.rowid AND g.item_id = i.id"
        "   ORDER BY g.sample_index, g.rowid) g)"
        " FROM items i WHERE i.run_id = ? AND i.kind = ? ORDER BY i.combo_index, i.round, i.kind", [run_id, kind])
    while True:
        chunk = cursor.fetchmany(1024)
        if not chunk:
            return
        packed = json.loads("[" + ",".join(row[4] or "[]" for row in chunk) + "]")
        for row, samples in zip(chunk, packed, strict=True):
            if None in samples:
                samples = [[] if s is None else s for s in samples]
            yield row[0], row[1], row[2], row[3], samples
