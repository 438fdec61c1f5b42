"""Large runs: exit statuses, checks before a run starts, progress options, `rejudge` and `merge`.

Exit statuses of `run`, `resume` and `rejudge` (docs/large-runs.md): 0 every planned item finished, 3 some items
failed, 4 the run is paused (waiting for a reviewer), 130 interrupted (Ctrl-C); 2 bad usage, 1 other errors.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from skillweave.cli.common import echo_json, open_store
from skillweave.errors import ConfigError, RunIncomplete, UsageError

EXIT_ITEMS_FAILED = 3
EXIT_PAUSED = 4
EXIT_INTERRUPTED = 130


def exit_code(summary) -> int:
    """0 when every item finished; failures outrank a pause (both need a person, failures first)."""
    if summary.failed:
        return EXIT_ITEMS_FAILED
    if summary.paused:
        return EXIT_PAUSED
    return 0


def exit_when_done(ctx: click.Context, summary) -> None:
    """Set the exit status once the command has printed everything (hints after the report included)."""
    code = exit_code(summary)
    if code:
        ctx.find_root().call_on_close(lambda: stop(code))


def stop(code: int):
    """End the command with this exit status (no error line: the run's summary says what happened)."""
    _PENDING[0] = code  # for main(), where click returns an Exit's code instead of raising it
    raise RunIncomplete(code)


_PENDING = [0]


def pending_exit_code() -> int:
    """The exit status a finished run asked for (0 when none), cleared on reading."""
    code, _PENDING[0] = _PENDING[0], 0
    return code


# ---- checks before the run row is created ---------------------------------------------------------------
def preflight(config: dict) -> None:
    """Every openai:/anthropic: model the run names has its key (or a local endpoint), and endpoints are URLs.

    Runs before the run row is created, so a missing key leaves no run behind. Builds each provider the same way
    the run will (agents/providers.py), without any network call.
    """
    from skillweave.agents.providers import get_provider

    for name, env in (("OPENAI_BASE_URL", "openai"), ("ANTHROPIC_BASE_URL", "anthropic")):
        url = os.environ.get(name)
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} '{url}' is not an http:// or https:// URL (used by {env}: models)")
    items = config.model_dump().items() if hasattr(config, "model_dump") else config.items()  # typed or a dict
    for key, value in items:
        if isinstance(value, str) and value.startswith(("openai:", "anthropic:")):
            try:
                get_provider(value, max_concurrency=int(config.get("concurrency") or 8))
            except ConfigError as exc:
                raise ConfigError(f"--{key.replace('_', '-')} {value}: {exc}; no run was created") from None


# ---- progress and interruption ---------------------------------------------------------------------------
def _store_progress_every(ctx: click.Context, _param, value):
    if value is not None:
        ctx.find_root().obj["progress_every"] = value
    return value


progress_every_option = click.option(
    "--progress-every", type=click.FloatRange(min=0), default=None, expose_value=False, callback=_store_progress_every,
    metavar="SECONDS",
    help="When stderr is not a terminal (batch jobs, Slurm logs): print a progress line every SECONDS "
         "(default 60, or $SKILLWEAVE_PROGRESS_EVERY; 0 turns it off). A terminal shows a live bar instead.")


def progress_every(ctx: click.Context) -> float | None:
    value = ctx.find_root().obj.get("progress_every")
    if value is None and os.environ.get("SKILLWEAVE_PROGRESS_EVERY"):
        try:
            value = float(os.environ["SKILLWEAVE_PROGRESS_EVERY"])
        except ValueError:
            raise UsageError(f"SKILLWEAVE_PROGRESS_EVERY '{os.environ['SKILLWEAVE_PROGRESS_EVERY']}' is not a "
                             "number of seconds") from None
    return value


def resume_command(ctx: click.Context, run_id: str) -> str:
    db = ctx.find_root().obj.get("db")
    parts = ["skillweave"] + (["--db", db] if db and db != "skillweave.db" else []) + ["resume", run_id]
    return shlex.join(parts)


# ---- rejudge -------------------------------------------------------------------------------------------
@click.command("rejudge")
@click.argument("run_id")
@click.option("--judge", required=True, help="Judge model spec for the new grades (fake, openai:<m>, ...).")
@click.option("--judge-template", default=None, help="Judge template (default: the source run's).")
@click.option("--grading-samples", default=None, type=click.IntRange(min=1),
              help="Judge samples per text (default: the source run's).")
@click.option("--concurrency", default=None, type=click.IntRange(min=1), help="Threads in flight at once.")
@click.option("--reply-cache", type=click.Path(dir_okay=False), default=None,
              help="Reuse judge replies to identical requests from this file (or SKILLWEAVE_REPLY_CACHE).")
@progress_every_option
@click.pass_context
def rejudge(ctx, run_id, judge, judge_template, grading_samples, concurrency, reply_cache):
    """Grade an existing run's outputs again into a new run linked to it; the student is never called.

    Supports Skill-Mix runs made by `skillweave run skillmix`. Each new item points to the item it re-grades
    (`parent_id`), and the new run's config names the source run (`rejudge_of`).

    \b
    Example:
      skillweave rejudge latest --judge openai:gpt-4o --grading-samples 5
      skillweave rejudge skillmix-20261126-101500-ab12cd --judge fake --judge-template skillmix/judge_points
    """
    from skillweave.agents.rejudge import copy_items, rejudge_config
    from skillweave.cli.common import prompts_dir
    from skillweave.cli.run import check_model, execute_and_report
    from skillweave.prompts import load_template

    store = open_store(ctx)
    source = store.get_run(run_id)
    check_model("--judge", judge)
    config = rejudge_config(source, judge=judge, judge_template=judge_template, grading_samples=grading_samples,
                            concurrency=concurrency, reply_cache=reply_cache or os.environ.get("SKILLWEAVE_REPLY_CACHE"))
    load_template(config["judge_template"], prompts_dir(ctx))
    preflight({"judge": judge})
    if config.get("reply_cache"):
        from skillweave.agents.reply_cache import open_cache

        config["reply_cache"] = os.path.abspath(os.path.expanduser(config["reply_cache"]))
        open_cache(config["reply_cache"])
    new_id = store.create_run(source["pipeline"], config, command=shlex.join(["skillweave", *sys.argv[1:]]))
    for role, catalog_id in store.run_catalogs(source["id"]).items():
        store.link_run_catalog(new_id, catalog_id, role)
    try:
        with store.transaction():  # the copied items appear together or not at all
            copied, missing = copy_items(store, source["id"], new_id)
    except BaseException as exc:
        store.set_run_status(new_id, "failed", error=f"copying the source items: {type(exc).__name__}: {exc}")
        raise
    click.echo(f"run {new_id}: re-judging {copied} texts of run {source['id']}"
               + (f" ({missing} items have no text and stay failed)" if missing else ""), err=True)
    execute_and_report(ctx, source["pipeline"], new_id, config["concurrency"])


# ---- merge ---------------------------------------------------------------------------------------------
@click.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--into", "target", required=True, type=click.Path(dir_okay=False),
              help="Store to merge into (created when absent; its own records are kept).")
@click.option("--json", "as_json", is_flag=True, help="Print what was merged as JSON.")
def merge(sources, target, as_json):
    """Combine stores (the shards of a run, or any other stores) into one, with their lineage.

    Records with the same id must agree; an item planned but never started in one shard yields to the shard
    that ran it. Any other disagreement stops the merge with an error and leaves the target unchanged.

    \b
    Example:
      skillweave merge shard1.db shard2.db shard3.db --into all.db
      skillweave --db all.db report latest
    """
    from skillweave.store.merge import merge_stores

    result = merge_stores(list(sources), target)
    if as_json:
        echo_json(result)
        return
    for run in result["runs"]:
        click.echo(f"run {run['id']} ({run['status']}): {run['items']} items"
                   + (f", shards {', '.join(run['shards'])}" if run["shards"] else ""))
    added = ", ".join(f"{n} {t}" for t, n in result["added"].items() if n)
    click.echo(f"merged {len(sources)} stores into {target}: {added or 'nothing new'}", err=True)


def register(root: click.Group) -> None:
    root.add_command(rejudge)
    root.add_command(merge)
