"""Set-based reads for reports, exports and listings: one SQL statement per run, rows streamed.

`Store.items` plus `Store.grades(item)` and a review lookup per item cost three statements per item; on a
10^5-item run that is most of a report's time. `items_with_grades` returns the same item dicts in the same order
(combination index, round, kind), each carrying its grading samples and, on request, its latest review, from a
single statement whose correlated subqueries run inside SQLite (indexes on `grades.item_id` and
`reviews.item_id`), and yields them as the cursor reads them, so memory does not grow with the run.
"""

from __future__ import annotations

from collections.abc import Iterator

from skillweave.store import _decode_item, jload

REVIEW_COLUMNS = ("id", "item_id", "run_id", "reviewer", "decision", "reason", "changes", "created_at")


def items_with_grades(store, run_id: str, *, kind: str | None = None, status: str | None = None,
                      grades: bool = True, reviews: bool = False, payload: bool = True) -> Iterator[dict]:
    """Items of a run as `Store.items` gives them, plus `grades` (the item's grade rows by sample index, points
    decoded, as `Store.grades` gives them) and `latest_review` (the newest review with `changes` decoded, or
    None) when asked for. `payload=False` leaves out `payload` and `prompt_versions` (reports that only count)."""
    columns = ["i.*"] if payload else [
        "i.id", "i.run_id", "i.kind", "i.combo_index", "i.round", "i.k", "i.skills", "i.topic", "i.status",
        "i.error", "i.parent_id", "i.created_at", "i.updated_at"]
    if grades:  # points nested as JSON (not JSON text inside JSON), so each item's grades decode in one call
        columns.append(
            "(SELECT json_group_array(json_array(g.sample_index,"
            " CASE WHEN json_valid(g.points) THEN json(g.points) END, g.score, g.parse_status, g.judge))"
            " FROM (SELECT * FROM grades g WHERE g.item_id = i.id ORDER BY g.sample_index) g) AS _grades")
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
    while True:
        chunk = cursor.fetchmany(512)
        if not chunk:
            return
        for values in chunk:
            row = dict(zip(names, values, strict=True))
            packed_grades, packed_review = row.pop("_grades", None), row.pop("_review", None)
            if payload:
                item = _decode_item(row)
            else:
                item = row
                row["skills"] = jload(row["skills"], [])
            if grades:
                item["grades"] = [
                    {"sample_index": g[0], "points": [] if g[1] is None else g[1], "score": g[2],
                     "parse_status": g[3], "judge": g[4]}
                    for g in jload(packed_grades, [])
                ]
            if reviews:
                review = dict(zip(REVIEW_COLUMNS, jload(packed_review), strict=True)) if packed_review else None
                if review is not None:
                    review["changes"] = jload(review["changes"], {})
                item["latest_review"] = review
            yield item
