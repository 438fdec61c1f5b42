"""`skillweave import ...`: bring published outputs into the store."""

from __future__ import annotations

import click

from skillweave.cli.common import echo_json, json_option, open_store
from skillweave.metrics.skillmix import run_report
from skillweave.store.importers import import_skillmix


@click.group("import")
def import_group() -> None:
    """Import published outputs so `skillweave report` recomputes their metrics."""


@import_group.command("skillmix")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--grader", default=None, help="Only this grader's graded/by_<grader>_... folders.")
@json_option
@click.pass_context
def import_skillmix_cmd(ctx, folder, grader, as_json):
    """Official Skill-Mix layout: k*_s*_v*_r*/<student>/records.csv and graded/by_<grader>_on_text_1_*/records.csv.

    One run per (student, grader); prints each run's metrics.

    \b
    Example:
      skillweave import skillmix skill-mix/test --grader gpt-4
      skillweave report <run id printed above> --json
    """
    store = open_store(ctx)
    run_ids = import_skillmix(store, folder, grader)
    reports = [run_report(store, store.get_run(r)) for r in run_ids]
    if as_json:
        echo_json([{k: v for k, v in rep.items() if k not in ("columns", "table")} for rep in reports])
        return
    for run_id, rep in zip(run_ids, reports, strict=True):
        run = store.get_run(run_id)
        click.echo(f"run {run_id}: student {run['config']['student']}, grader {run['config']['grader']}")
        for row in rep["table"]:
            click.echo("  " + "  ".join(f"{k}={v}" for k, v in row.items()))


def register(root: click.Group) -> None:
    root.add_command(import_group)
