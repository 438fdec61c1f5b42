"""Helpers shared by command modules: opening the store, printing records as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import click

from skillweave.errors import UsageError
from skillweave.store import Store

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


# Commands that only read the store: at a path with no file they stop instead of creating an empty store.
READ_ONLY_COMMANDS = {
    "runs list", "runs show", "report", "logs", "logs show", "items list", "items lineage", "export", "review list",
    "review show", "review export", "skills list", "skills show", "skills export",
}


def open_store(ctx: click.Context) -> Store:
    root = ctx.find_root()
    if "store" not in root.obj:
        path = root.obj["db"]
        command = " ".join(ctx.command_path.split()[1:])
        if command in READ_ONLY_COMMANDS and path != ":memory:" and not Path(path).expanduser().exists():
            raise UsageError(f"no store at '{path}' (from --db or SKILLWEAVE_DB); `{command}` reads an existing "
                             "store and creates none")
        root.obj["store"] = Store(path)
    return root.obj["store"]


def prompts_dir(ctx: click.Context) -> str | None:
    return ctx.find_root().obj.get("prompts_dir")


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def echo_table(rows: Iterable[dict], columns: list[str], empty: str = "(none)") -> None:
    """A plain aligned text table; long cells are shortened."""
    rows = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    if not rows:
        click.echo(empty)
        return
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    click.echo("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in columns).rstrip())


def _cell(value, limit: int = 60) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def emit_report(result: dict, *, headline: str | None = None, plotter=None, plot_path: str | None = None,
                as_json: bool = False, empty: str = "(no graded items)") -> None:
    """Print a reporter's result: optional PNG, then JSON (without the table) or the headline (if any) and the table."""
    if plot_path:
        plotter(result, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
    if as_json:
        echo_json({k: v for k, v in result.items() if k not in ("columns", "table")})
    else:
        if headline:
            click.echo(headline)
        echo_table(result["table"], result["columns"], empty=empty)
