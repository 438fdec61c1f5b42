"""The `skillweave` command line: one root group, noun groups with verb subcommands.

Each command module registers itself on the root group; library errors become one line on stderr.
"""

from __future__ import annotations

import csv
import sqlite3
import sys

import click

from skillweave._version import __version__
from skillweave.cli import (
    charts,
    conceptmix,
    export,
    imports,
    largeruns,
    math2,
    models,
    prompts,
    review,
    run,
    runs,
    select,
    skills,
    train,
    unlearn,
)
from skillweave.errors import SkillweaveError

EPILOG = """\b
Example (embedded model, no API key):
  skillweave run skillmix --model local --k 2 --n 2
  skillweave report latest
  skillweave logs -n 5
"""



@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skillweave")
@click.option("--db", envvar="SKILLWEAVE_DB", default="skillweave.db", show_default=True,
              help="SQLite store file (or set SKILLWEAVE_DB).")
@click.option("--prompts-dir", envvar="SKILLWEAVE_PROMPTS", default=None,
              help="A folder of prompt templates that override the packaged ones (or set SKILLWEAVE_PROMPTS).")
@click.pass_context
def cli(ctx: click.Context, db: str, prompts_dir: str | None) -> None:
    """skillweave: an LLM data factory for skill-composition research."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db
    ctx.obj["prompts_dir"] = prompts_dir


for _module in (unlearn, train, run, runs, prompts, imports, review, select, conceptmix, export, charts, math2, skills,
                models, largeruns):
    _module.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors exit 2, library errors exit 1, each as one line on stderr."""
    try:
        from skillweave.cli.outcome import pending_exit_code

        pending_exit_code()  # clear what an earlier in-process invocation left
        cli.main(args=argv, prog_name="skillweave", standalone_mode=False)
        if code := pending_exit_code():  # items failed (3), paused (4), interrupted (130): docs/large-runs.md
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SkillweaveError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (UnicodeDecodeError, csv.Error) as exc:  # an input file no specific reader checked
        click.echo(f"Error: an input file is not valid {'UTF-8 text' if isinstance(exc, UnicodeError) else 'CSV'}: "
                   f"{exc}", err=True)
        sys.exit(2)
    except sqlite3.DatabaseError as exc:  # damage found after opening (a truncated or corrupt store)
        click.echo(f"Error: the store cannot be read: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted; `skillweave resume RUN_ID` continues where it stopped.", err=True)
        sys.exit(130)
