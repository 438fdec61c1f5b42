"""`skillweave review ...`: human review plugged in mid-loop (threads paused at a LangGraph interrupt).

The queue is every item, across runs, whose thread waits for a person (`status = review`). A decision resumes
exactly that item's thread and is stored as a `reviews` row (who, when, what changed).
"""

from __future__ import annotations

import json

import click

from skillweave.agents.review import (
    make_decision,
    ordered_fields,
    resolve_item_id,
    review_entry,
    review_queue,
)
from skillweave.cli.common import echo_json, echo_table, json_option, open_store, prompts_dir
from skillweave.cli.prompt_pinning import allow_changed_prompts, allow_changed_prompts_option
from skillweave.decisions import submit_decision
from skillweave.errors import UsageError
from skillweave.store.payload import editable_fields, review_request


@click.group("review")
def review_group() -> None:
    """Review items that a run paused for a person: list, show, approve, edit, reject, or serve a web page."""


def _text(value: str | None) -> str | None:
    """A value, or the contents of a file when written as @path."""
    if value is not None and value.startswith("@"):
        from skillweave.catalog.textfiles import read_text

        return read_text(value[1:], value).strip()
    return value


@review_group.command("list")
@click.option("--run", "run_id", default=None, help="Only items of this run (default: every run).")
@json_option
@click.pass_context
def review_list(ctx, run_id, as_json):
    """Items waiting for a reviewer, across runs, oldest first.

    \b
    Example:
      skillweave review list
      skillweave review list --run latest --json
    """
    store = open_store(ctx)
    items = review_queue(store, store.get_run(run_id)["id"] if run_id else None)
    rows = []
    for item in items:
        request = review_request(item)
        editable = request.get("editable") or {}
        rows.append({"item_id": item["id"], "run_id": item["run_id"], "pipeline": request.get("pipeline"),
                     "skills": " + ".join(item["skills"]), "question": editable.get("question", ""),
                     "answer": editable.get("answer", ""), "waiting_since": item["updated_at"]})
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["item_id", "run_id", "skills", "question", "answer"], empty="(nothing waiting for review)")


@review_group.command("show")
@click.argument("item_id")
@json_option
@click.pass_context
def review_show(ctx, item_id, as_json):
    """One item as a reviewer sees it: editable fields, attempts, critic verdicts, earlier decisions.

    \b
    Example:
      skillweave review show 3f2a9c1b
    """
    store = open_store(ctx)
    entry = review_entry(store, resolve_item_id(store, item_id))
    if as_json:
        echo_json(entry)
        return
    item, request = entry["item"], entry["request"]
    click.echo(f"item {item['id']}  run {item['run_id']}  status {item['status']}")
    for field, value in ordered_fields(entry["current"]):
        click.echo(f"\n== {field}{' (editable)' if entry['waiting'] else ''} ==\n{value}")
    for section in request.get("context") or []:
        click.echo(f"\n== {section['label']} ==\n{section['text']}")
    for review in entry["reviews"]:
        click.echo(f"\n[{review['created_at']}] {review['reviewer']}: {review['decision']} {review['reason']}")
    if not request:
        click.echo("\n(this item has no review request)")


def _submit(ctx, item_id: str, decision: dict, as_json: bool) -> None:
    store = open_store(ctx)
    result = submit_decision(store, resolve_item_id(store, item_id), decision, prompts_dir=prompts_dir(ctx),
                             allow_changed_prompts=allow_changed_prompts(ctx))
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{result['action']}: item {result['item_id']} is now {result['status']}; "
                   f"run {result['run_id']} {result['run_status']} ({result['paused_in_run']} still waiting)")


MIN_TOKEN_LENGTH = 16  # the random default is 24 characters

reviewer_option = click.option("--as", "reviewer", default=None,
                               help="Reviewer name stored with the decision (default: $SKILLWEAVE_REVIEWER or login).")


@review_group.command("approve")
@click.argument("item_id")
@click.option("--reason", default="", help="Optional note stored with the decision.")
@reviewer_option
@json_option
@allow_changed_prompts_option
@click.pass_context
def review_approve(ctx, item_id, reason, reviewer, as_json):
    """Approve an item as it is and resume its thread.

    \b
    Example:
      skillweave review approve 3f2a9c1b --as alice
    """
    _submit(ctx, item_id, make_decision("approve", reviewer=reviewer, reason=reason), as_json)


@review_group.command("edit")
@click.argument("item_id")
@click.option("--question", default=None, help="New question text (or @file).")
@click.option("--solution", default=None, help="New reference solution (or @file).")
@click.option("--answer", default=None, help="New final answer (or @file).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Any other editable field (repeatable).")
@click.option("--reason", default="", help="Why it was edited.")
@reviewer_option
@json_option
@allow_changed_prompts_option
@click.pass_context
def review_edit(ctx, item_id, question, solution, answer, sets, reason, reviewer, as_json):
    """Edit fields of an item, accept it, and resume its thread (before/after is kept).

    \b
    Example:
      skillweave review edit 3f2a9c1b --answer 42 --reason "arithmetic slip"
      skillweave review edit 3f2a9c1b --question @fixed_question.txt
    """
    changes = {"question": _text(question), "solution": _text(solution), "answer": _text(answer)}
    for entry in sets:
        field, sep, value = entry.partition("=")
        if not sep or not field:
            raise UsageError(f"--set '{entry}' must look like FIELD=VALUE")
        changes[field.strip()] = _text(value)
    _submit(ctx, item_id, make_decision("edit", reviewer=reviewer, reason=reason, changes=changes), as_json)


@review_group.command("reject")
@click.argument("item_id")
@click.option("--reason", required=True, help="Why it is rejected (stored as the drop reason).")
@reviewer_option
@json_option
@allow_changed_prompts_option
@click.pass_context
def review_reject(ctx, item_id, reason, reviewer, as_json):
    """Reject an item with a reason; its thread resumes and drops it (and may draw a new pair).

    \b
    Example:
      skillweave review reject 3f2a9c1b --reason "needs only one skill"
    """
    _submit(ctx, item_id, make_decision("reject", reviewer=reviewer, reason=reason), as_json)


@review_group.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--run", "run_id", default=None, help="Only items of this run (default: every run).")
@click.pass_context
def review_export(ctx, path, run_id):
    """Write the queue as JSON Lines for offline review; fill in `action` (and edits), then `review import`.

    Each line: item_id, run_id, skills, the editable fields, the context sections, and empty `action`/`reason`.

    \b
    Example:
      skillweave review export queue.jsonl
      skillweave review import queue.jsonl --as alice
    """
    from skillweave.export.writers import refuse_store, write_text_atomic

    store = open_store(ctx)
    refuse_store(path, store)
    items = review_queue(store, store.get_run(run_id)["id"] if run_id else None)
    lines = []
    for item in items:
        request = review_request(item)
        lines.append(json.dumps({"item_id": item["id"], "run_id": item["run_id"], "skills": item["skills"],
                                 "action": "", "reason": "", **dict(ordered_fields(request.get("editable") or {})),
                                 "context": request.get("context") or []}, ensure_ascii=False) + "\n")
    write_text_atomic(path, "".join(lines))
    click.echo(f"wrote {len(items)} item(s) to {path}", err=True)


@review_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@reviewer_option
@json_option
@allow_changed_prompts_option
@click.pass_context
def review_import(ctx, path, reviewer, as_json):
    """Apply decisions from a JSON Lines file (as written by `review export`); lines without an action are skipped.

    `action` is approve, edit or reject; for edit, changed editable fields count as the edit.

    \b
    Example:
      skillweave review import queue.jsonl --as alice --json
    """
    from skillweave.catalog.textfiles import read_text

    rows = []  # the whole file is checked before the store is opened or any decision recorded
    for number, line in enumerate(read_text(path, "review decisions").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number} is not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path} line {number} is not a JSON object with item_id and action")
        rows.append(row)
    store = open_store(ctx)
    results = []
    for row in rows:
        if not row.get("action"):
            continue
        item_id = resolve_item_id(store, str(row.get("item_id", "")))
        editable = editable_fields(store.get_item(item_id))
        changes = {f: row[f] for f in editable if f in row and row[f] != editable[f]} if row["action"] == "edit" else {}
        decision = make_decision(row["action"], reviewer=row.get("reviewer") or reviewer,
                                 reason=row.get("reason") or "", changes=changes)
        results.append(submit_decision(store, item_id, decision, prompts_dir=prompts_dir(ctx),
                                       allow_changed_prompts=allow_changed_prompts(ctx)))
    if as_json:
        echo_json(results)
    else:
        echo_table(results, ["item_id", "action", "status", "run_id"], empty="(no decisions in the file)")


@review_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep 127.0.0.1 unless needed).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="Port (1-65535).")
@click.option("--token", envvar="SKILLWEAVE_REVIEW_TOKEN", default=None,
              help="Access token (or $SKILLWEAVE_REVIEW_TOKEN); a random one is made and printed when absent.")
@reviewer_option
@allow_changed_prompts_option
@click.pass_context
def review_serve(ctx, host, port, token, reviewer):
    """Serve the review queue as a web page (server-rendered, escaped, access token required).

    \b
    Example:
      skillweave review serve --port 8765
      # open the printed http://127.0.0.1:8765/?token=... link
    """
    import secrets

    import uvicorn

    from skillweave.web import create_app

    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise UsageError(f"--token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} (or leave it out "
                         "for a random one)")
    token = token or secrets.token_urlsafe(18)
    store = open_store(ctx)
    app = create_app(store, token=token, prompts_dir=prompts_dir(ctx), default_reviewer=reviewer,
                     allow_changed_prompts=allow_changed_prompts(ctx))
    click.echo(f"review page: http://{host}:{port}/?token={token}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(root: click.Group) -> None:
    root.add_command(review_group)
