"""Shards: one deterministic part of a run's plan, so a run can be split across machines.

Every machine plans the whole run from the same config and catalogs (so the same items, in the same order, with
the same ids) and then runs only the threads at plan positions p with p % N == I - 1. The run id of a sharded
run is derived from its config (everything except the shard, concurrency and reply cache), so every shard
writes the same run id and `skillweave merge` puts the shards back together as one run.
"""

from __future__ import annotations

from skillweave.errors import UsageError
from skillweave.store import jdump, stable_id
from skillweave.store.merge import PER_MACHINE_KEYS


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'2/8' -> (2, 8); None -> None. I counts from 1."""
    if value in (None, ""):
        return None
    try:
        i, n = (int(v) for v in str(value).split("/"))
    except ValueError:
        raise UsageError(f"--shard '{value}' is not I/N (e.g. 1/4)") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard '{value}': need 1 <= I <= N")
    return i, n


def check(pipeline: str, config) -> None:
    """A bad --shard, or one on a pipeline whose runs cannot be split, stops before anything is stored."""
    if parse_shard(config.shard) is not None and type(config).shard_refused:
        raise UsageError(f"--shard: {pipeline} runs cannot be split into shards: {type(config).shard_refused}")


def select(specs, shard: str | None):
    """The threads of `specs` (the whole plan, in plan order) that belong to this shard: a list for a list, a
    `LazyPlan` (agents/lazyplan.py) for a lazy plan."""
    parsed = parse_shard(shard)
    if parsed is None:
        return specs
    i, n = parsed
    if not isinstance(specs, list):
        return specs.positions(lambda p: p % n == i - 1, len(range(i - 1, len(specs), n)))
    return [s for p, s in enumerate(specs) if p % n == i - 1]


def plan_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in PER_MACHINE_KEYS}


def sharded_run_id(pipeline: str, config: dict) -> str:
    """The run id every shard of the same run shares."""
    return f"{pipeline.replace('_', '-')}-shards-{stable_id(pipeline, jdump(plan_config(config)), length=16)}"
