"""`skillweave import ...`: bring published outputs into the store."""

from __future__ import annotations

import click

from skillweave.cli.common import echo_json, json_option, open_store
from skillweave.cli.run import LazyGroup
from skillweave.metrics.skillmix import run_report
from skillweave.store.importers import import_skillmix, reparse_skillmix


@click.group("import", cls=LazyGroup)
def import_group() -> None:
    """Import published outputs so `skillweave report` recomputes their metrics."""


@import_group.command("skillmix")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--grader", default=None, help="Only this grader's graded/by_<grader>_... folders.")
@click.option("--reparse", is_flag=True,
              help="Also re-parse every grader reply with skillweave's parser and report its agreement with the "
                   "official parsed points, per rubric item.")
@json_option
@click.pass_context
def import_skillmix_cmd(ctx, folder, grader, reparse, as_json):
    """Official Skill-Mix layout: k*_s*_v*_r*/<student>/records.csv and graded/by_<grader>_on_text_1_*/records.csv.

    One run per (student, grader); prints each run's metrics.

    \b
    Example:
      skillweave import skillmix skill-mix/test --grader gpt-4
      skillweave report <run id printed above> --json
      skillweave import skillmix skill-mix/test --reparse --json   # + {"reparse": per-item agreement}
    """
    store = open_store(ctx)
    agreement = reparse_skillmix(folder, grader) if reparse else None  # checked before anything is written
    run_ids = import_skillmix(store, folder, grader)
    reports = [run_report(store, store.get_run(r)) for r in run_ids]
    if as_json:
        runs = [{k: v for k, v in rep.items() if k not in ("columns", "table")} for rep in reports]
        echo_json({"runs": runs, "reparse": agreement} if reparse else runs)
        return
    for run_id, rep in zip(run_ids, reports, strict=True):
        run = store.get_run(run_id)
        click.echo(f"run {run_id}: student {run['config']['student']}, grader {run['config']['grader']}")
        for row in rep["table"]:
            click.echo("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if agreement:
        click.echo(f"re-parse: {agreement['samples']} grader replies; all k+3 points equal in "
                   f"{agreement['records_agree']} ({agreement['records_rate']:.2%}); same number of points in "
                   f"{agreement['length_agree']}")
        for k, items in agreement["by_k"].items():
            click.echo(f"  k={k}: " + "  ".join(f"{c['item']} {c['agree']}/{c['n']} ({c['rate']:.2%})" for c in items))
        for d in agreement["disagreements"]:
            click.echo(f"  differs: {d['file']} row {d['row']} sample {d['sample']}: official {d['official']} "
                       f"skillweave {d['skillweave']}")


def register(root: click.Group) -> None:
    root.add_command(import_group)
