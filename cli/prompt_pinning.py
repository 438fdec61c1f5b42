"""`--allow-changed-prompts`, for the commands that continue a run (resume, review decisions, review serve)."""

from __future__ import annotations

import click


def _remember(ctx: click.Context, _param, value: bool) -> bool:
    ctx.meta["allow_changed_prompts"] = bool(value) or ctx.meta.get("allow_changed_prompts", False)
    return value


allow_changed_prompts_option = click.option(
    "--allow-changed-prompts", is_flag=True, expose_value=False, callback=_remember,
    help="Continue even if a template the run used changed since (or with another --prompts-dir); the changed "
         "templates' model calls are made again and the run is pinned to the new versions.")


def allow_changed_prompts(ctx: click.Context) -> bool:
    return bool(ctx.meta.get("allow_changed_prompts", False))
