"""Looking at what is in the store: runs, reports, model-call logs, items and their lineage."""

from __future__ import annotations

import json

import click

from skillweave.cli.common import echo_json, echo_table, emit_report, json_option, open_store
from skillweave.cli.logs_show import empty_logs_message, logs_show
from skillweave.errors import UsageError
from skillweave.store import jload, queries


@click.group("runs")
def runs_group() -> None:
    """List and inspect runs."""


@runs_group.command("list")
@click.option("--limit", default=20, show_default=True, help="Newest runs to show.")
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@json_option
@click.pass_context
def runs_list(ctx, limit, pipeline, as_json):
    """Recent runs, newest first. A `running` run whose process is gone (killed) shows as
    `interrupted (process gone)`; `skillweave resume RUN` continues it.

    \b
    Example:
      skillweave runs list --limit 5 --json
    """
    from skillweave.store.cost import format_spend, runs_spend
    from skillweave.store.leases import run_liveness

    store = open_store(ctx)
    rows = [{**r, "status": run_liveness(store, r)} for r in store.list_runs(limit=limit, pipeline=pipeline)]
    spend = runs_spend(store, [r["id"] for r in rows])
    if as_json:
        echo_json([{**r, "config": jload(r["config"], {}), "spend": spend[r["id"]]} for r in rows])
    else:
        rows = [{**r, "spend": format_spend(spend[r["id"]])} for r in rows]
        echo_table(rows, ["id", "pipeline", "status", "spend", "created_at", "finished_at"], empty="(no runs)")


@runs_group.command("show")
@click.argument("run_id")
@json_option
@click.pass_context
def runs_show(ctx, run_id, as_json):
    """One run: config, status, item counts by status.

    \b
    Example:
      skillweave runs show latest
    """
    from skillweave.store.leases import run_liveness

    store = open_store(ctx)
    run = store.get_run(run_id)
    run["status"] = run_liveness(store, run)
    counts = queries.item_status_counts(store, run["id"])
    run = {**run, "items": counts, "catalogs": store.run_catalogs(run["id"])}
    if as_json:
        echo_json(run)
    else:
        for key in ("id", "pipeline", "status", "version", "created_at", "finished_at", "command", "error"):
            click.echo(f"{key:12} {run.get(key) or ''}")
        prompts = run.get("prompts_dir")  # '' for the packaged templates, None before the run first executed
        click.echo(f"{'prompts':12} {'(packaged)' if prompts == '' else prompts or ''}")
        click.echo(f"{'items':12} {counts}")
        click.echo(f"{'config':12} {run['config']}")


@click.command("report")
@click.argument("run_id")
@click.option("--across-rounds", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="How generation rounds combine per combination.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Also draw a PNG.")
@json_option
@click.pass_context
def report(ctx, run_id, across_rounds, plot_path, as_json):
    """The metrics table of a run (mean ± standard error over combinations, per k for Skill-Mix), then the
    parse failures per step (replies a step could not parse; grades stored unparsed).

    \b
    Example:
      skillweave report latest
      skillweave report latest --json --plot skillmix.png
    """
    store = open_store(ctx)
    run = store.get_run(run_id)
    from skillweave.pipelines import get_pipeline

    spec = get_pipeline(run["pipeline"])
    reporter = spec.reporter()
    if reporter is None:
        raise UsageError(f"pipeline '{run['pipeline']}' has no report")
    plotter = spec.plotter()
    if plot_path and plotter is None:
        raise UsageError(f"pipeline '{run['pipeline']}' has no plot")
    from skillweave.store.cost import format_spend, run_spend

    result = reporter(store, run, across_rounds=across_rounds)
    from skillweave.metrics.parse_failures import format_parse_failures, parse_failures

    spend = run_spend(store, run["id"], by_stage=True)
    result = {**result, "parse_failures": parse_failures(store, run["id"]), "spend": spend}
    emit_report(result, headline=f"{run['pipeline']} run {run['id']} ({run['status']})", plotter=plotter,
                plot_path=plot_path, as_json=as_json)
    if not as_json:
        for line in format_parse_failures(result["parse_failures"]):
            click.echo(line)
        click.echo(f"spend: {format_spend(spend)}, {spend['input_tokens']} input + {spend['output_tokens']} output "
                   f"tokens in {spend['calls']} calls")
        for stage, s in spend["stages"].items():
            click.echo(f"  {stage}: {format_spend(s)}, {s['input_tokens']} + {s['output_tokens']} tokens, "
                       f"{s['calls']} calls" + (f" ({s['failed']} failed)" if s["failed"] else ""))


@click.group("logs", invoke_without_command=True)
@click.option("-n", "--count", default=10, show_default=True, type=click.IntRange(min=1),
              help="Number of calls to show.")
@click.option("--run", "run_id", default=None, help="Only calls of this run.")
@click.option("--errors", is_flag=True, help="Only failed calls.")
@json_option
@click.pass_context
def logs(ctx, count, run_id, errors, as_json):
    """Recent model calls with tokens, latency and errors; `logs show CALL` prints one call whole.

    \b
    Example:
      skillweave logs -n 5 --errors
      skillweave logs show 3f2a9c
    """
    if ctx.invoked_subcommand is not None:
        return
    store = open_store(ctx)
    resolved = store.get_run(run_id)["id"] if run_id else None
    rows = queries.recent_calls(store, resolved, errors_only=errors, limit=count)
    if as_json:
        echo_json([{**r, "request": jload(r["request"]), "response": jload(r["response"])} for r in rows])
        return
    for r in rows:
        r["reply"] = (jload(r["response"]) or [""])[0] if r["response"] else ""
        r["tokens"] = f"{r['input_tokens'] or 0}/{r['output_tokens'] or 0}"
    echo_table(rows, ["created_at", "role", "provider", "model", "prompt_version", "tokens", "latency_ms",
                      "error", "reply"], empty=empty_logs_message(store, resolved, errors))


logs.add_command(logs_show)


@click.group("items")
def items_group() -> None:
    """List items of a run and trace any item's lineage."""


@items_group.command("list")
@click.argument("run_id")
@click.option("--status", default=None, help="Only items with this status (done, failed, pending, ...).")
@json_option
@click.pass_context
def items_list(ctx, run_id, status, as_json):
    """Items of a run.

    \b
    Example:
      skillweave items list latest --status failed
    """
    store = open_store(ctx)
    rows = store.items(store.get_run(run_id)["id"], status=status)
    if as_json:
        _echo_json_stream(rows)  # the same text as echo_json(list(rows)), written row by row
    else:
        echo_table(rows, ["id", "kind", "combo_index", "round", "k", "status", "topic", "skills", "error"],
                   empty="(no items)")


def _echo_json_stream(rows) -> None:
    """Write an iterable of dicts as the indented JSON list echo_json prints, one row at a time."""
    first = True
    for row in rows:
        text = json.dumps(row, indent=2, ensure_ascii=False, default=str).replace("\n", "\n  ")
        click.echo(("[\n  " if first else ",\n  ") + text, nl=False)
        first = False
    click.echo("[]" if first else "\n]")


@items_group.command("lineage")
@click.argument("item_id")
@json_option
@click.pass_context
def items_lineage(ctx, item_id, as_json):
    """Everything that produced an item: run config, catalogs, prompt versions, calls, grades, reviews.

    \b
    Example:
      skillweave items lineage 1be56989ac97e4b0ec31 --json
      skillweave items lineage 1be569        # an unambiguous prefix of at least 6 characters
    """
    from skillweave.agents.review import resolve_item_id

    store = open_store(ctx)
    lineage = store.lineage(resolve_item_id(store, item_id))  # a full id or an unambiguous prefix (>= 6)
    if as_json:
        echo_json(lineage)
        return
    item = lineage["item"]
    click.echo(f"item {item['id']} ({item['kind']}, {item['status']}) of run {item['run_id']}")
    click.echo(f"config: {lineage['run']['config']}")
    click.echo(f"catalogs: {lineage['catalogs']}")
    for p in lineage["prompt_versions"]:
        click.echo(f"prompt {p['name']} {p['id']} ({p['source']})")
    for c in lineage["llm_calls"]:
        click.echo(f"call {c['id']} {c['role']} {c['provider']}:{c['model']} {c['prompt_version']} "
                   f"{'error: ' + c['error'] if c['error'] else 'ok'}")
    for g in lineage["grades"]:
        click.echo(f"grade sample {g['sample_index']} by {g['judge']}: {g['points']} ({g['parse_status']})")
    for r in lineage["reviews"]:
        click.echo(f"review {r['decision']} by {r['reviewer']}: {r['reason']}")


def register(root: click.Group) -> None:
    for command in (runs_group, report, logs, items_group):
        root.add_command(command)
