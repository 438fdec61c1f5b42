"""Runs a pipeline: one LangGraph thread per record, many in flight, checkpointed in the run's SQLite file.

A thread whose checkpoint says it finished is skipped; one that stopped mid-way continues from its last
checkpoint; one paused at an `interrupt` stays paused until a reviewer resumes it. Model replies already in
the store are reused by `agents.llm`, so a resumed run never pays for the same call twice.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from skillweave.agents.llm import RunContext
from skillweave.agents.providers import close_clients
from skillweave.errors import ConfigError
from skillweave.graphs import PIPELINES
from skillweave.store import Store


@dataclass
class RunSummary:
    run_id: str
    threads: int = 0
    done: int = 0
    failed: int = 0
    paused: int = 0
    skipped: int = 0
    statuses: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.paused:
            return "paused"
        return "done"


def pipeline_module(name: str):
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline '{name}'; known: {', '.join(sorted(PIPELINES))}")
    return importlib.import_module(PIPELINES[name])


class StoreCheckpointer(SqliteSaver):
    """LangGraph's SQLite checkpointer on the store's own connection, awaited without a thread hop.

    Checkpoint reads and writes take tens of microseconds, so running them inline on the event loop is cheaper
    than aiosqlite's worker-thread round trips, and one connection means no write-lock contention between the
    store and the checkpointer. Nodes never await inside a store transaction, so the saver's commits cannot
    interleave with one.
    """

    async def aget_tuple(self, config):
        return self.get_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config, checkpoint, metadata, new_versions):
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path=""):
        return self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id):
        return self.delete_thread(thread_id)


@asynccontextmanager
async def checkpointer(store: Store):
    """The checkpointer for a run: LangGraph's `checkpoints`/`writes` tables inside the store's file."""
    saver = StoreCheckpointer(store.db.conn)
    with store.lock:
        saver.setup()
    yield saver


def _threads_with_checkpoints(saver: SqliteSaver, thread_ids: list[str]) -> set[str]:
    """One query instead of a state lookup per thread: which threads have any checkpoint at all."""
    found: set[str] = set()
    with saver.cursor(transaction=False) as cur:
        for start in range(0, len(thread_ids), 500):
            chunk = thread_ids[start:start + 500]
            cur.execute(f"SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id IN ({','.join('?' * len(chunk))})",
                        chunk)
            found.update(row[0] for row in cur.fetchall())
    return found


def thread_config(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id}}


async def _run_thread(graph, spec, ctx: RunContext, summary: RunSummary, resume_value=None,
                      fresh: bool = False, durability: str = "async", retry_failed: bool = False) -> None:
    config = thread_config(spec.thread_id)
    snapshot = None if fresh else await graph.aget_state(config)
    if retry_failed and snapshot is not None and not snapshot.next and snapshot.values.get("status") == "failed":
        await graph.checkpointer.adelete_thread(spec.thread_id)  # run it again from its input; stored replies
        snapshot = None                                          # are reused, failed calls are made again
    if resume_value is not None:
        payload = Command(resume=resume_value)
    elif snapshot is None or snapshot.created_at is None:  # never started (or, with exit durability, never ended)
        payload = spec.input
    elif snapshot.interrupts:
        summary.paused += 1
        return
    elif not snapshot.next:  # finished before
        summary.skipped += 1
        _count(summary, snapshot.values.get("status"))
        return
    else:
        payload = None  # continue from the last checkpoint
    result = await graph.ainvoke(payload, config, context=ctx, durability=durability)
    if result.get("__interrupt__"):
        summary.paused += 1
    else:
        _count(summary, result.get("status"))


def _count(summary: RunSummary, status: str | None) -> None:
    summary.statuses[status] = summary.statuses.get(status, 0) + 1
    if status == "failed":
        summary.failed += 1
    else:
        summary.done += 1


async def execute(pipeline: str, ctx: RunContext, *, concurrency: int = 8, progress: bool = True,
                  only_threads: dict[str, object] | None = None, retry_failed: bool = False) -> RunSummary:
    """Plan and run every thread of a run. `only_threads` maps thread ids to resume values (review);
    `retry_failed` runs threads that ended with status 'failed' again."""
    module = pipeline_module(pipeline)
    specs = module.plan(ctx)
    summary = RunSummary(run_id=ctx.run_id, threads=len(specs))
    others = []
    if only_threads is not None:
        others = [s for s in specs if s.thread_id not in only_threads]
        specs = [s for s in specs if s.thread_id in only_threads]
    bar = _progress(len(specs), pipeline, progress)

    async with checkpointer(ctx.store) as saver:
        graph = module.build_graph(checkpointer=saver)

        started = _threads_with_checkpoints(saver, [s.thread_id for s in specs])
        durability = getattr(module, "DURABILITY", "async")

        # `concurrency` workers take threads from one shared iterator: memory follows the concurrency, not the
        # run size (a task per thread, all created up front, cost ~7 KB each and slowed large runs down).
        pending = iter(specs)

        async def worker():
            for spec in pending:
                await _run_thread(graph, spec, ctx, summary, (only_threads or {}).get(spec.thread_id),
                                  fresh=spec.thread_id not in started, durability=durability,
                                  retry_failed=retry_failed)
                bar.update(1)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(specs))))))
        finally:
            bar.close()
            await close_clients()
        for spec in others:  # a partial resume still reports threads paused elsewhere in the run
            if (await graph.aget_state(thread_config(spec.thread_id))).interrupts:
                summary.paused += 1
    return summary


async def paused_threads(pipeline: str, ctx: RunContext) -> list[tuple[str, list]]:
    """(thread id, interrupt values) for every thread of a run that waits for a reviewer."""
    module = pipeline_module(pipeline)
    out = []
    async with checkpointer(ctx.store) as saver:
        graph = module.build_graph(checkpointer=saver)
        for spec in module.plan(ctx):
            snapshot = await graph.aget_state(thread_config(spec.thread_id))
            if snapshot.interrupts:
                out.append((spec.thread_id, [i.value for i in snapshot.interrupts]))
    return out


def _progress(total: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="thread", disable=not enabled or not sys.stderr.isatty(), leave=False)


def run_pipeline(pipeline: str, store: Store, run_id: str, *, prompts_dir: str | None = None,
                 concurrency: int = 8, progress: bool = True, only_threads: dict | None = None,
                 retry_failed: bool = False) -> RunSummary:
    """Synchronous entry point used by the CLI and tests; records the run's final status."""
    run = store.get_run(run_id)
    ctx = RunContext(store=store, run_id=run_id, config=run["config"], prompts_dir=prompts_dir,
                     max_concurrency=max(concurrency, 1))
    store.set_run_status(run_id, "running")
    try:
        summary = asyncio.run(execute(pipeline, ctx, concurrency=concurrency, progress=progress,
                                      only_threads=only_threads, retry_failed=retry_failed))
    except BaseException as exc:
        store.set_run_status(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                             error=f"{type(exc).__name__}: {exc}")
        raise
    store.set_run_status(run_id, summary.status)
    return summary
