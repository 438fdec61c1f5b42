"""Runs a pipeline: one LangGraph thread per record, many in flight, checkpointed in the run's SQLite file.

A thread whose checkpoint says it finished is skipped; one that stopped mid-way continues from its last
checkpoint; one paused at an `interrupt` stays paused until a reviewer resumes it. Model replies already in
the store are reused by `agents.llm`, so a resumed run never pays for the same call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

from langgraph.types import Command

from skillweave.agents.llm import RunContext
from skillweave.agents.run_prompts import open_run_prompts
from skillweave.collector import fewer_collections
from skillweave.errors import ConfigError
from skillweave.graphs import shards
from skillweave.graphs.executor import DirectThreads, direct_graph
from skillweave.graphs.progress import Progress
from skillweave.pipeline import Pipeline
from skillweave.providers.core import close_clients
from skillweave.providers.prices import BudgetExceeded
from skillweave.store import Store
from skillweave.store.checkpoints import (  # noqa: F401  (StoreCheckpointer: kept importable here)
    StoreCheckpointer,
    checkpointer,
    threads_with_checkpoints,
)


@dataclass
class RunSummary:
    run_id: str
    threads: int = 0
    done: int = 0
    failed: int = 0
    paused: int = 0
    skipped: int = 0
    crashed: int = 0  # threads that raised: recorded, the others go on, `resume` continues them
    budget: int = 0  # threads stopped (or not started) by --max-cost: `resume --max-cost` continues them
    budget_reason: str | None = None
    errors: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.crashed:
            return "failed"
        if self.budget:
            return "budget"
        if self.paused:
            return "paused"
        return "done"

    @property
    def error(self) -> str | None:
        if self.budget and not self.crashed:
            return (f"{self.budget_reason}; {self.budget} thread(s) wait: `skillweave resume {self.run_id} "
                    f"--max-cost USD` raises the budget and continues them")
        if not self.crashed:
            return None
        return (f"{self.crashed} thread(s) raised (first: {self.errors[0]}); "
                f"`skillweave resume {self.run_id}` continues them")


def _spec(pipeline: Pipeline) -> Pipeline:
    """The runtime is handed a spec (from `skillweave.pipelines.get_pipeline`); it never looks names up."""
    if not isinstance(pipeline, Pipeline):
        raise ConfigError(f"the runtime takes a Pipeline spec, not {pipeline!r}; "
                          f"use skillweave.pipelines.get_pipeline({pipeline!r})")
    return pipeline


def thread_config(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id}}


async def _run_thread(graph, spec, ctx: RunContext, summary: RunSummary, resume_value=None,
                      fresh: bool = False, durability: str = "async", retry_failed: bool = False,
                      direct=None) -> None:
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
    if direct is not None and payload is spec.input:  # a fresh thread of a graph that runs direct (executor.py)
        result = await direct.run(spec.thread_id, payload)
    else:
        result = await graph.ainvoke(payload, config, context=ctx, durability=durability)
    if result.get("__interrupt__"):
        summary.paused += 1
    else:
        _count(summary, result.get("status"))


def _thread_crashed(ctx: RunContext, spec, summary: RunSummary, exc: Exception) -> None:
    """Record a thread that raised: its items are marked failed with the reason and an event names the thread.
    Its checkpoint stays where it was, so `resume` continues it from its last finished node."""
    reason = f"thread {spec.thread_id} raised {type(exc).__name__}: {exc}"[:500]
    summary.crashed += 1
    summary.errors.append(reason)
    item_ids = [spec.input.get("item_id")] if spec.input.get("item_id") else list(spec.input.get("item_ids") or [])
    try:
        for item_id in item_ids:
            ctx.store.update_item(item_id, status="failed", error=reason)
            ctx.store.add_event(ctx.run_id, item_id, "thread", "crashed", reason)
        if not item_ids:
            ctx.store.add_event(ctx.run_id, None, "thread", "crashed", reason)
    except Exception as exc:  # recording must not stop the other threads; the summary still counts it
        summary.errors.append(f"recording it failed: {type(exc).__name__}: {exc}")


def _count(summary: RunSummary, status: str | None) -> None:
    summary.statuses[status] = summary.statuses.get(status, 0) + 1
    if status == "failed":
        summary.failed += 1
    else:
        summary.done += 1


async def execute(pipeline: Pipeline, ctx: RunContext, *, concurrency: int = 8, progress: bool = True,
                  only_threads: dict[str, object] | None = None, retry_failed: bool = False,
                  progress_every: float | None = None, planned: list | None = None,
                  summary: RunSummary | None = None) -> RunSummary:
    """Plan and run every thread of a run. `only_threads` maps thread ids to resume values (review);
    `retry_failed` runs threads that ended with status 'failed' again. A pipeline without a graph runs its
    `runner` (which reuses stored replies the same way). A worker process (graphs/workers.py) passes its part
    of the parent's plan as `planned` and a `summary` it reports from while the threads run."""
    module = _spec(pipeline)
    ctx.config = module.load_config(ctx.config)  # a stored dict (or a typed config) -> the typed config
    if module.runner is not None:
        return await _run_runner(module, ctx, concurrency)
    # the plan may be lazy (agents/lazyplan.py): a count now, the threads (and their items) as they are taken
    specs = shards.select(module.plan(ctx), ctx.config.shard) if planned is None else planned  # whole plan
    summary = RunSummary(run_id=ctx.run_id, threads=len(specs)) if summary is None else summary
    others = []
    if only_threads is not None:  # a reviewer's partial resume: the plan is listed, as the paused ones are needed
        specs = list(specs)
        others = [s for s in specs if s.thread_id not in only_threads]
        specs = [s for s in specs if s.thread_id in only_threads]
    bar = Progress(len(specs), module.name, enabled=progress, summary=summary, store=ctx.store, run_id=ctx.run_id,
                   every=progress_every)
    bar.start()

    async with checkpointer(ctx.store) as saver, _own_items(ctx.store):
        graph = module.build_graph(checkpointer=saver)

        durability = module.durability
        direct, _ = direct_graph(graph, durability)  # fresh threads skip Pregel where no checkpoint is needed
        direct = DirectThreads(direct, ctx, ctx.store, graph, durability) if direct is not None else None

        # `concurrency` workers take threads from one shared iterator that pulls the plan a batch at a time and
        # looks the batch's checkpoints up in one query: memory follows the concurrency and the batch, not the
        # run size (a task per thread, or a spec and a thread id per item held for the whole run, grew with it).
        failure: list[BaseException] = []
        pending = _scheduled(specs, saver, failure)

        async def worker():
            for spec, fresh in pending:
                try:
                    if ctx.budget is not None and ctx.budget.stopped:  # --max-cost reached: start no thread
                        raise BudgetExceeded(ctx.budget.stopped)
                    await _run_thread(graph, spec, ctx, summary, (only_threads or {}).get(spec.thread_id),
                                      fresh=fresh, durability=durability,
                                      retry_failed=retry_failed, direct=direct)
                except BudgetExceeded as exc:  # its checkpoint stays at its last finished node; resumable
                    summary.budget += 1
                    summary.budget_reason = str(exc)
                except Exception as exc:  # one thread's bug or bad reply never takes the others down
                    _thread_crashed(ctx, spec, summary, exc)
                bar.update(1)
                ctx.store.forget_own(spec.input.get("item_id") if isinstance(spec.input, dict) else None)
                # let the loop turn: a thread that never waits (stored or instant replies) would otherwise run the
                # next one in the same tick, and a tick holds its write transaction and its cancelled timers
                # (asyncio purges those between ticks) until it ends: with the fake provider, the whole run
                await asyncio.sleep(0)

        try:
            with fewer_collections():  # young-generation passes every 50,000 allocations (collector.py)
                await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(specs))))))
        finally:
            bar.close()
            await close_clients()
        if failure:  # planning failed part-way (the threads already taken ended first): the run stops with it
            raise failure[0]
        for spec in others:  # a partial resume still reports threads paused elsewhere in the run
            if (await graph.aget_state(thread_config(spec.thread_id))).interrupts:
                summary.paused += 1
    return summary


@contextlib.asynccontextmanager
async def _own_items(store):
    """The items this process creates while it runs the threads are followed in memory (store/own_items.py)."""
    with store.own_items():
        yield


SCHEDULE_BATCH = 256  # threads taken from the plan (and items created) per checkpoint lookup


def _scheduled(specs, saver, failure: list):
    """(spec, fresh) for every thread of `specs`, taken SCHEDULE_BATCH at a time; `fresh` when the thread has no
    checkpoint (one query per batch). An error while planning is kept in `failure` and ends the iteration for
    every worker, so the threads in flight finish and `execute` raises it afterwards."""
    threads = iter(specs)
    while not failure:
        batch = []
        try:
            for spec in threads:
                batch.append(spec)
                if len(batch) >= SCHEDULE_BATCH:
                    break
        except Exception as exc:  # the threads planned before it still run
            failure.append(exc)
        if not batch:
            return
        try:
            started = threads_with_checkpoints(saver, [s.thread_id for s in batch])
        except Exception as exc:
            failure.append(exc)
            return
        for spec in batch:
            yield spec, spec.thread_id not in started


async def _run_runner(pipeline: Pipeline, ctx: RunContext, concurrency: int) -> RunSummary:
    from skillweave.pipeline import resolve

    result = await resolve(pipeline.runner)(ctx, concurrency)
    summary = RunSummary(run_id=ctx.run_id, threads=result.get("items", 0), done=result.get("done", 0),
                         failed=result.get("failed", 0))
    summary.statuses = {"done": summary.done, "failed": summary.failed}
    return summary


async def paused_threads(pipeline: Pipeline, ctx: RunContext) -> list[tuple[str, list]]:
    """(thread id, interrupt values) for every thread of a run that waits for a reviewer."""
    module = _spec(pipeline)
    if module.graph is None:
        return []
    ctx.config = module.load_config(ctx.config)
    out = []
    async with checkpointer(ctx.store) as saver:
        graph = module.build_graph(checkpointer=saver)
        for spec in module.plan(ctx):
            snapshot = await graph.aget_state(thread_config(spec.thread_id))
            if snapshot.interrupts:
                out.append((spec.thread_id, [i.value for i in snapshot.interrupts]))
    return out


def run_context(pipeline: Pipeline, store: Store, run_id: str, *, prompts_dir: str | None = None,
                concurrency: int = 8, allow_changed_prompts: bool = False) -> RunContext:
    """The context of a run: its stored settings loaded into the pipeline's typed config, and the prompt
    templates it owns (its recorded folder and versions win over `prompts_dir`; agents.run_prompts)."""
    run = store.get_run(run_id)
    config = _spec(pipeline).load_config(run["config"])
    prompts = open_run_prompts(store, run_id, prompts_dir, allow_changed=allow_changed_prompts)
    budget = None
    if config.max_cost:
        from skillweave.providers.prices import Budget
        from skillweave.store.cost import run_spend

        budget = Budget(config.max_cost, spent=run_spend(store, run_id)["cost_usd"] or 0.0)
    batch = None
    if config.batch:
        from skillweave.providers.batch import Batcher

        batch = Batcher(store, run_id)
    return RunContext(store=store, run_id=run_id, config=config, prompts_dir=prompts.prompts_dir,
                      max_concurrency=max(concurrency, 1), pins=prompts.pins, scheme=prompts.scheme,
                      allow_changed_prompts=allow_changed_prompts, budget=budget, batch=batch)


async def arun_pipeline(pipeline: Pipeline, store: Store, run_id: str, *, prompts_dir: str | None = None,
                        concurrency: int = 8, progress: bool = True, only_threads: dict | None = None,
                        retry_failed: bool = False, allow_changed_prompts: bool = False,
                        progress_every: float | None = None) -> RunSummary:
    """Run (or resume) a run on the running event loop; records the run's final status. The run is held by a
    lease (store/leases.py) while it runs: a second process continuing the same run is refused."""
    from skillweave.store.leases import RunLease

    with RunLease(store, run_id, command=" ".join(sys.argv[1:])):
        ctx = run_context(pipeline, store, run_id, prompts_dir=prompts_dir, concurrency=concurrency,
                          allow_changed_prompts=allow_changed_prompts)
        with recorded_status(store, run_id), store.batch_writes():  # one commit per event-loop tick (store/)
            summary = await execute(pipeline, ctx, concurrency=concurrency, progress=progress,
                                    only_threads=only_threads, retry_failed=retry_failed,
                                    progress_every=progress_every)
        store.set_run_status(run_id, summary.status, error=summary.error)
    return summary


@contextlib.contextmanager
def recorded_status(store: Store, run_id: str):
    """The run is `running` while the block runs; if the block raises it becomes `interrupted` (Ctrl-C, a
    cancelled task) or `failed`, with the error. The caller records the final status of a block that returns."""
    store.set_run_status(run_id, "running")
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
        store.set_run_status(run_id, "interrupted" if interrupted else "failed", error=f"{type(exc).__name__}: {exc}")
        raise


def run_pipeline(pipeline: Pipeline, store: Store, run_id: str, *, prompts_dir: str | None = None,
                 concurrency: int = 8, progress: bool = True, only_threads: dict | None = None,
                 retry_failed: bool = False, allow_changed_prompts: bool = False,
                 progress_every: float | None = None) -> RunSummary:
    """Synchronous entry point used by the CLI and tests; records the run's final status.

    `prompts_dir` is what the command asked for; the run's own recorded folder and template versions win
    (agents.run_prompts), and a changed template stops here unless `allow_changed_prompts`."""
    try:
        return asyncio.run(arun_pipeline(pipeline, store, run_id, prompts_dir=prompts_dir, concurrency=concurrency,
                                         progress=progress, only_threads=only_threads, retry_failed=retry_failed,
                                         allow_changed_prompts=allow_changed_prompts,
                                         progress_every=progress_every))
    except KeyboardInterrupt as exc:  # raised inside a task, it ends the loop without reaching arun_pipeline
        store.set_run_status(run_id, "interrupted", error=f"{type(exc).__name__}: {exc}")
        raise
