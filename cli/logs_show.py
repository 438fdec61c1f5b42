"""`skillweave logs show CALL`: one model call whole (request messages and every reply), and honest empty listings."""

from __future__ import annotations

import click

from skillweave.cli.common import echo_json, json_option, open_store
from skillweave.errors import NotFound, UsageError
from skillweave.store import jload, queries


def empty_logs_message(store, run_id: str | None, errors: bool) -> str:
    """What an empty `logs` listing says: no calls at all, or calls but none that failed."""
    total = queries.call_count(store, run_id)
    scope = f" in run {run_id}" if run_id else ""
    if total and errors:
        return f"(no failed model calls{scope}; {total} calls, all succeeded)"
    return f"(no model calls{scope})"


def find_call(store, call_id: str) -> dict:
    """A call by full id or an unambiguous prefix of at least 6 characters."""
    row = queries.call_by_id(store, call_id)
    if row is not None:
        return row
    if len(call_id) < 6:
        raise NotFound(f"no model call '{call_id}' (give the full id or a prefix of at least 6 characters)")
    rows = queries.calls_with_prefix(store, call_id, limit=2)
    if not rows:
        raise NotFound(f"no model call '{call_id}' in {store.path}; `skillweave logs` lists recent calls")
    if len(rows) > 1:
        raise UsageError(f"call id prefix '{call_id}' is ambiguous; give more characters")
    return rows[0]


def _content_text(content) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if p.get("type") == "text" else
                         f"[image {p.get('mime')} {p.get('bytes')} bytes sha {p.get('sha')}]" for p in content)
    return str(content)


@click.command("show")
@click.argument("call_id")
@json_option
@click.pass_context
def logs_show(ctx, call_id, as_json):
    """One model call whole: who made it, the request messages and parameters, every reply, tokens, error.

    \b
    Example:
      skillweave logs show 3f2a9c
      skillweave logs show 3f2a9c5e0b1d4c7a9e8f6a5b4c3d2e1f --json
    """
    store = open_store(ctx)
    call = find_call(store, call_id)
    request, response = jload(call["request"], {}) or {}, jload(call["response"])
    if as_json:
        echo_json({**call, "request": request, "response": response})
        return
    for key in ("id", "run_id", "item_id", "role", "provider", "model", "prompt_version", "created_at",
                "latency_ms", "attempts"):
        click.echo(f"{key:15} {call.get(key) if call.get(key) is not None else ''}")
    click.echo(f"{'tokens':15} {call.get('input_tokens') or 0} in, {call.get('output_tokens') or 0} out")
    params = {k: v for k, v in request.items() if k != "messages"}
    click.echo(f"{'parameters':15} {params}")
    click.echo(f"{'error':15} {call['error'] or ''}")
    for i, message in enumerate(request.get("messages", [])):
        click.echo(f"\n--- request message {i + 1} ({message.get('role')}) ---")
        click.echo(_content_text(message.get("content")))
    for i, text in enumerate(response or []):
        click.echo(f"\n--- reply {i + 1} of {len(response)} ---")
        click.echo(text)
    if not response:
        click.echo("\n--- no reply (the call failed) ---")
