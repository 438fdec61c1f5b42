"""Parse failures per step of a run: how many model replies a step could not use, so none hides in a score.

A step is a model-call role (`judge`, `refine`, `critic`, ...; `cluster:<subject>:<batch>` counts as `cluster`).
Per step:

- `replies`: reply texts the step received (successful calls; a call with n samples counts n);
- `parse_failures`: replies that did not parse or validate, from the `parse_failed` (and chart judges' older
  `parse_failure`) events each pipeline records, one per failed reply (a later try or repair turn may still
  have succeeded);
- `unparsed_grades`: grades stored with a status saying their judge reply could not be parsed (`empty` for a
  Skill-Mix table with no points, which scores 0; `invalid` for a chart judge, scored -1; `unparsed`,
  `parse_failed`), attributed to the role of the call that produced them (`grade` when there is none, as for
  imported grades).

`skillweave report` prints one line per step with failures and adds the list under `parse_failures` in
`--json`.
"""

from __future__ import annotations

from skillweave.store import queries

PARSE_EVENT_STATUSES = ("parse_failed", "parse_failure")
UNPARSED_GRADE_STATUSES = ("empty", "invalid", "unparsed", "parse_failed")


def parse_failures(store, run_id: str) -> list[dict]:
    """`[{"step", "replies", "parse_failures", "unparsed_grades"}]`, one per step with replies or failures."""
    steps: dict[str, dict] = {}

    def row(step: str) -> dict:
        step = step.split(":")[0]  # `cluster:<subject>:<batch>` is the step `cluster`
        return steps.setdefault(step, {"step": step, "replies": 0, "parse_failures": 0, "unparsed_grades": 0})

    for r in queries.replies_by_role(store, run_id):
        row(r["role"] or "?")["replies"] += int(r["n"] or 0)
    # distinct (item, stage, reason): a node that re-runs on resume logs the same failure again only rarely, and
    # every recorded failure names its try or its call
    for r in queries.distinct_events_by_stage(store, run_id, PARSE_EVENT_STATUSES):
        row(r["stage"] or "?")["parse_failures"] += int(r["n"])
    for r in queries.grades_by_step(store, run_id, UNPARSED_GRADE_STATUSES):
        row(r["step"])["unparsed_grades"] += int(r["n"])
    return sorted(steps.values(), key=lambda s: s["step"])


def format_parse_failures(rows: list[dict]) -> list[str]:
    """One line per step: `parse failures  judge: 5 of 20 replies, 5 grades unparsed` (`none` when no step had
    one)."""
    lines = [f"parse failures  {r['step']}: {r['parse_failures']} of {r['replies']} replies"
             + (f", {r['unparsed_grades']} grade{'s' * (r['unparsed_grades'] != 1)} unparsed"
                if r["unparsed_grades"] else "")
             for r in rows if r["parse_failures"] or r["unparsed_grades"]]
    return lines or (["parse failures  none"] if rows else [])
