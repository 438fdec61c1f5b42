"""`skillweave review skills ...`: shape the coarse skills of a paused `run extract-skills`, then approve.

The reviewer's edits (rename, define, merge, split, drop) accumulate in a draft stored on the run's
`skills.catalog` item, each one validated; `approve` resumes exactly the paused thread with the draft (and a
`reviews` row listing the edits), after which the run relabels the questions and builds the bank.
"""

from __future__ import annotations

import copy

import click

from skillweave.agents.skill_extraction import CATALOG_KIND
from skillweave.catalog import instruct_formats as fmt
from skillweave.cli.common import echo_json, echo_table, json_option, open_store, prompts_dir
from skillweave.cli.review import review_group
from skillweave.errors import NotFound, UsageError
from skillweave.store import now
from skillweave.store.payload import review_request


def _hint(ctx, run_id: str) -> None:
    item = _catalog_item(open_store(ctx), run_id)
    if item["status"] == "review":
        click.echo(
            f"paused for review: `skillweave review skills show {run_id}`, edit, then "
            f"`skillweave review skills approve {run_id}`",
            err=True,
        )
    elif item["payload"].get("bank_id"):
        click.echo(f"bank {item['payload']['bank_id']}", err=True)


# ---- review skills ------------------------------------------------------------------------------------
def _catalog_item(store, run_id: str) -> dict:
    run = store.get_run(run_id) if run_id != "latest" else _latest_extraction(store)
    items = list(store.items(run["id"], kind=CATALOG_KIND))
    if run["pipeline"] != "extract-skills" or not items:
        raise UsageError(f"run '{run['id']}' is a {run['pipeline']} run, not an extract-skills run")
    return items[0]


def _latest_extraction(store) -> dict:
    runs = store.list_runs(limit=1, pipeline="extract-skills")
    if not runs:
        raise NotFound("no extract-skills runs yet; start one with `skillweave run extract-skills`")
    return store.get_run(runs[0]["id"])


def _waiting(store, run_id: str) -> dict:
    item = _catalog_item(store, run_id)
    if item["status"] != "review":
        raise UsageError(
            f"run '{item['run_id']}' is not waiting for a skill review (status: {item['status']})"
        )
    return item


def _members(cluster: dict) -> list[str]:
    return [m.split("\t", 1)[-1] for m in cluster.get("members") or []]


def apply_review_op(draft: list[dict], op: dict) -> tuple[list[dict], list[str]]:
    """One reviewer edit on the draft -> (new draft, fine-label keys to exclude). Raises UsageError."""
    draft = copy.deepcopy(draft)
    names = [c["name"] for c in draft]
    excluded: list[str] = []

    def find(name: str) -> dict:
        for c in draft:
            if c["name"] == name:
                return c
        raise UsageError(f"no coarse skill '{name}' in the draft; `skillweave review skills show` lists them")

    def check_new(name: str, allow: tuple = ()) -> str:
        snake = fmt.to_snake_case(name)
        if not snake:
            raise UsageError(f"'{name}' is not a usable skill name")
        if snake in names and snake not in allow:
            raise UsageError(f"a coarse skill named '{snake}' already exists; merge into it instead")
        return snake

    kind = op["op"]
    if kind == "rename":
        c = find(op["skill"])
        c["name"] = check_new(op["to"])
    elif kind == "define":
        find(op["skill"])["definition"] = op["definition"]
    elif kind == "merge":
        sources = [find(n) for n in op["skills"]]
        if len(sources) < 2:
            raise UsageError("merge needs at least two skills")
        into = check_new(op["into"], allow=tuple(op["skills"]))
        merged = {
            "name": into,
            "definition": op.get("definition") or sources[0].get("definition") or "",
            "subject": sources[0].get("subject") or "",
            "members": [m for s in sources for m in s.get("members") or []],
        }
        position = draft.index(sources[0])
        draft = [c for c in draft if c not in sources]
        draft.insert(min(position, len(draft)), merged)
    elif kind == "split":
        source = find(op["skill"])
        parts = op["into"]
        by_fine = {m.split("\t", 1)[-1]: m for m in source.get("members") or []}
        assigned: set[str] = set()
        new = []
        for part_name, fines in parts.items():
            unknown = [f for f in fines if f not in by_fine]
            if unknown:
                raise UsageError(
                    f"'{op['skill']}' has no fine label(s) {unknown}; it has: {', '.join(by_fine)}"
                )
            assigned |= set(fines)
            new.append(
                {
                    "name": check_new(part_name, allow=(op["skill"],)),
                    "definition": "",
                    "subject": source.get("subject") or "",
                    "members": [by_fine[f] for f in fines],
                }
            )
        left = [f for f in by_fine if f not in assigned]
        if left:
            raise UsageError(
                f"split of '{op['skill']}' leaves fine label(s) {left} unassigned; give each a part"
            )
        position = draft.index(source)
        draft = draft[:position] + new + draft[position + 1 :]
    elif kind == "drop":
        source = find(op["skill"])
        draft.remove(source)
        if op.get("exclude_questions"):
            excluded = list(source.get("members") or [])
    else:
        raise UsageError(f"unknown review edit '{kind}'")
    return draft, excluded


def _edit(ctx, run_id: str, op: dict, as_json: bool) -> None:
    store = open_store(ctx)
    item = _waiting(store, run_id)
    p = item["payload"]
    draft, excluded = apply_review_op(p.get("review_draft") or p["clusters"], op)
    store.update_item(
        item["id"],
        payload_update={
            "review_draft": draft,
            "review_ops": [*(p.get("review_ops") or []), {**op, "at": now()}],
            "review_excluded": [*(p.get("review_excluded") or []), *excluded],
        },
    )
    store.add_event(item["run_id"], item["id"], "review", "edited", f"{op['op']}: {op}")
    _show(store, item["run_id"], as_json)


def _show(store, run_id: str, as_json: bool) -> None:
    item = _catalog_item(store, run_id)
    p = item["payload"]
    draft = p.get("review_draft") or p.get("final_clusters") or p.get("clusters") or []
    if as_json:
        echo_json(
            {
                "run_id": item["run_id"],
                "status": item["status"],
                "skills": draft,
                "ops": p.get("review_ops") or [],
                "excluded": p.get("review_excluded") or [],
            }
        )
        return
    click.echo(
        f"run {item['run_id']} ({item['status']}): {len(draft)} coarse skills, "
        f"{len(p.get('review_ops') or [])} edits"
    )
    echo_table(
        [
            {
                "skill": c["name"],
                "subject": c.get("subject") or "",
                "fine_labels": ", ".join(_members(c)),
                "definition": c.get("definition") or "",
            }
            for c in draft
        ],
        ["skill", "subject", "fine_labels", "definition"],
    )


@review_group.group("skills")
def review_skills() -> None:
    """Shape the coarse skills of a paused `run extract-skills` (rename, merge, split, drop), then approve."""


@review_skills.command("list")
@json_option
@click.pass_context
def review_skills_list(ctx, as_json):
    """Extract-skills runs waiting for a skill review.

    \b
    Example:
      skillweave review skills list --json
    """
    store = open_store(ctx)
    rows = []
    for run in store.list_runs(limit=200, pipeline="extract-skills"):
        for item in store.items(run["id"], kind=CATALOG_KIND, status="review"):
            draft = item["payload"].get("review_draft") or []
            rows.append(
                {
                    "run_id": run["id"],
                    "skills": len(draft),
                    "edits": len(item["payload"].get("review_ops") or []),
                    "since": item["updated_at"],
                }
            )
    echo_json(rows) if as_json else echo_table(
        rows, ["run_id", "skills", "edits", "since"], empty="(nothing waits)"
    )


@review_skills.command("show")
@click.argument("run_id", default="latest")
@json_option
@click.pass_context
def review_skills_show(ctx, run_id, as_json):
    """The current draft of coarse skills with their fine labels.

    \b
    Example:
      skillweave review skills show latest
    """
    _show(open_store(ctx), run_id, as_json)


@review_skills.command("rename")
@click.argument("run_id")
@click.argument("skill")
@click.argument("new_name")
@json_option
@click.pass_context
def review_skills_rename(ctx, run_id, skill, new_name, as_json):
    """Rename a coarse skill (the name is snake_cased).

    \b
    Example:
      skillweave review skills rename RUN algebra_1 "Linear Equation Solving"
    """
    _edit(ctx, run_id, {"op": "rename", "skill": skill, "to": new_name}, as_json)


@review_skills.command("define")
@click.argument("run_id")
@click.argument("skill")
@click.argument("definition")
@json_option
@click.pass_context
def review_skills_define(ctx, run_id, skill, definition, as_json):
    """Replace a coarse skill's one-line definition.

    \b
    Example:
      skillweave review skills define RUN gcd_lcm "Compute gcds and lcms."
    """
    _edit(ctx, run_id, {"op": "define", "skill": skill, "definition": definition}, as_json)


@review_skills.command("merge")
@click.argument("run_id")
@click.argument("skills", nargs=-1, required=True)
@click.option("--into", required=True, help="Name of the merged skill (may be one of the merged names).")
@click.option("--definition", default=None, help="Definition of the merged skill.")
@json_option
@click.pass_context
def review_skills_merge(ctx, run_id, skills, into, definition, as_json):
    """Merge two or more coarse skills into one.

    \b
    Example:
      skillweave review skills merge RUN gcd_skills lcm_skills --into gcd_lcm
    """
    _edit(
        ctx, run_id, {"op": "merge", "skills": list(skills), "into": into, "definition": definition}, as_json
    )


@review_skills.command("split")
@click.argument("run_id")
@click.argument("skill")
@click.option(
    "--into",
    "parts",
    multiple=True,
    required=True,
    help="NEW_NAME=fine1,fine2 (repeat; every fine label of SKILL must go to one part).",
)
@json_option
@click.pass_context
def review_skills_split(ctx, run_id, skill, parts, as_json):
    """Split a coarse skill by assigning its fine labels to new skills.

    \b
    Example:
      skillweave review skills split RUN number_skills --into gcd=gcd_calc --into modular=mod_power,remainders
    """
    into = {}
    for part in parts:
        name, sep, fines = part.partition("=")
        if not sep or not name.strip() or not fines.strip():
            raise UsageError(f"--into '{part}' must look like NEW_NAME=fine1,fine2")
        into[name.strip()] = [f.strip() for f in fines.split(",") if f.strip()]
    _edit(ctx, run_id, {"op": "split", "skill": skill, "into": into}, as_json)


@review_skills.command("drop")
@click.argument("run_id")
@click.argument("skill")
@click.option(
    "--exclude-questions",
    is_flag=True,
    help="Leave its questions out of the bank (default: the model relabels them among the rest).",
)
@json_option
@click.pass_context
def review_skills_drop(ctx, run_id, skill, exclude_questions, as_json):
    """Remove a coarse skill from the catalog.

    \b
    Example:
      skillweave review skills drop RUN misc_skills --exclude-questions
    """
    _edit(ctx, run_id, {"op": "drop", "skill": skill, "exclude_questions": exclude_questions}, as_json)


def _resume(ctx, item: dict, decision: dict) -> None:
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline

    store = open_store(ctx)
    request = review_request(item)
    summary = run_pipeline(
        get_pipeline("extract-skills"),
        store,
        item["run_id"],
        prompts_dir=prompts_dir(ctx),
        progress=False,
        only_threads={request["thread_id"]: decision},
    )
    click.echo(f"run {item['run_id']}: {summary.status}", err=True)
    report = get_pipeline("extract-skills").reporter()(store, store.get_run(item["run_id"]))
    echo_table(report["table"], report["columns"])
    _hint(ctx, item["run_id"])


@review_skills.command("approve")
@click.argument("run_id")
@click.option("--reason", default="", help="A note kept with the review.")
@click.option("--reviewer", default=None, help="Reviewer name (default: $SKILLWEAVE_REVIEWER or the login).")
@click.pass_context
def review_skills_approve(ctx, run_id, reason, reviewer):
    """Accept the draft (with its edits) and resume the run: relabel questions, build the bank.

    \b
    Example:
      skillweave review skills approve RUN --reason "merged synonyms"
    """
    from skillweave.agents.review import default_reviewer_name

    store = open_store(ctx)
    item = _waiting(store, run_id)
    p = item["payload"]
    decision = {
        "action": "approve",
        "reviewer": reviewer or default_reviewer_name(),
        "reason": reason,
        "skills": p.get("review_draft") or p["clusters"],
        "ops": p.get("review_ops") or [],
        "excluded_fine": p.get("review_excluded") or [],
        "at": now(),
    }
    _resume(ctx, item, decision)


@review_skills.command("reject")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why the catalog is rejected (the run ends without a bank).")
@click.option("--reviewer", default=None, help="Reviewer name.")
@click.pass_context
def review_skills_reject(ctx, run_id, reason, reviewer):
    """Reject the clustered skills; the run ends without a bank.

    \b
    Example:
      skillweave review skills reject RUN --reason "labels are too coarse"
    """
    from skillweave.agents.review import default_reviewer_name

    item = _waiting(open_store(ctx), run_id)
    _resume(
        ctx,
        item,
        {"action": "reject", "reviewer": reviewer or default_reviewer_name(), "reason": reason, "at": now()},
    )
