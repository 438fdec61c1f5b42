"""How a run command ends and starts: exit statuses, checks before a run starts, progress options.

Exit statuses of `run`, `resume` and `rejudge` (docs/large-runs.md): 0 every planned item finished, 3 some items
failed, 4 the run is paused (waiting for a reviewer, or stopped by its --max-cost budget), 130 interrupted (Ctrl-C); 2 bad usage, 1 other errors.
"""

from __future__ import annotations

import os
import shlex

import click

from skillweave.errors import ConfigError, RunIncomplete, UsageError

EXIT_ITEMS_FAILED = 3
EXIT_PAUSED = 4
EXIT_INTERRUPTED = 130


def exit_code(summary) -> int:
    """0 when every item finished; failures outrank a pause (both need a person, failures first). A run stopped
    by its --max-cost budget is paused too (4): `resume --max-cost` continues it."""
    if summary.failed or getattr(summary, "lost", 0):  # lost: threads of a --workers process that died
        return EXIT_ITEMS_FAILED
    if summary.paused or getattr(summary, "budget", 0):
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
    the run will (providers/core.py), without any network call.
    """
    from skillweave.providers.core import get_provider

    for name, env in (("OPENAI_BASE_URL", "openai"), ("ANTHROPIC_BASE_URL", "anthropic")):
        url = os.environ.get(name)
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} '{url}' is not an http:// or https:// URL (used by {env}: models)")
    items = list(config.model_dump().items() if hasattr(config, "model_dump") else config.items())  # typed or a dict
    if any(isinstance(v, str) and (v == "local" or v.startswith("local:")) for _, v in items):
        from skillweave.providers.local_engine import check_dtype_setting

        try:  # the embedded model's weight type, without loading it
            check_dtype_setting()
        except ConfigError as exc:
            raise ConfigError(f"{exc}; no run was created") from None
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
