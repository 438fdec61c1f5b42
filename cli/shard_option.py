"""`--shard I/N` on every `run` command (docs/large-runs.md): one deterministic part of a run's plan.

Commands whose settings model offers `--shard` already (those generated from it, e.g. `run skillmix`) keep it;
the hand-written ones get this option, and the command puts the value into the run's settings before the run is
created. Pipelines whose runs cannot be split (`PipelineConfig.shard_refused`) refuse it with the reason.
"""

from __future__ import annotations

import click

from skillweave.graphs.shards import parse_shard

SHARD_META = "skillweave.shard"


def _store(ctx: click.Context, _param, value):
    if value:
        parse_shard(value)  # 'Error: --shard ...' (exit 2) before anything runs
        ctx.meta[SHARD_META] = value


def shard_option(command: click.Command) -> click.Command:
    if not any(p.name == "shard" for p in command.params):
        command.params.append(click.Option(
            ["--shard"], default=None, metavar="I/N", expose_value=False, callback=_store,
            help="Run only part I of N of the plan (same plan on every machine; each shard its own --db); join "
                 "the shards with `skillweave merge`. Refused where a run cannot be split (docs/large-runs.md)."))
    return command


def shard_of(ctx: click.Context) -> str | None:
    """The --shard value given to this command (None without one)."""
    return ctx.meta.get(SHARD_META)
