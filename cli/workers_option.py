"""`--workers N` on every `run` command and `resume` (docs/large-runs.md): N processes on this machine execute
one run in one store. The value is not part of the run's settings (like --concurrency, it is how this machine
runs it); the checks that need the settings run before the run is created (`check_new_run`)."""

from __future__ import annotations

import click

WORKERS_META = "skillweave.workers"
MAX_WORKERS = 64  # graphs.workers.MAX_WORKERS; the CLI does not import the runtime before a run starts

HELP = ("Worker processes on this machine that share the run (each with --concurrency threads in flight, 1 to "
        f"{MAX_WORKERS}; default 1). Not with the embedded local model or --batch (docs/large-runs.md).")


def _store(ctx: click.Context, _param, value):
    if value is not None:
        ctx.meta[WORKERS_META] = value


def workers_option(command: click.Command) -> click.Command:
    if not any(p.name == "workers" for p in command.params):
        command.params.append(click.Option(
            ["--workers"], type=click.IntRange(1, MAX_WORKERS), default=None, metavar="N", expose_value=False,
            callback=_store, help=HELP))
    return command


def workers_of(ctx: click.Context) -> int:
    """The --workers value given to this command (1 without one)."""
    return ctx.meta.get(WORKERS_META) or 1


def check_new_run(ctx: click.Context, pipeline: str, config) -> None:
    """A --workers the run cannot use stops with one `Error:` line before the run row exists."""
    workers = workers_of(ctx)
    if workers > 1:
        from skillweave.graphs.workers import check_workers
        from skillweave.pipelines import get_pipeline

        check_workers(get_pipeline(pipeline), config, ctx.find_root().obj["db"], workers)
