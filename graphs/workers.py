"""`--workers N`: several worker processes on one machine execute one run in one store (docs/large-runs.md).

The parent process holds the run's lease, plans the run once (the items are created then) and splits the plan
by position: worker i of N gets the threads at plan positions p with p % N == i, like shards but in one store.
The parts are disjoint, so no thread (and no item) is ever executed by two workers at once. Each worker is a
fresh interpreter (multiprocessing's spawn start method: torch and asyncio do not survive a fork), opens the
same SQLite file (WAL, busy timeout), holds a lease of its own (`<run id>#worker-<i>`, store/leases.py) and runs
its threads through the ordinary runtime (`graphs.runtime.execute` with `planned=`), so checkpoints, stored
replies, events and grades are written as by a single process (one transaction per event-loop tick, as there).
Workers report progress and their
summary to the parent over a pipe; the parent draws the progress bar and records the run's final status.

Kill -9 anywhere is safe: a worker dies with its parent (PR_SET_PDEATHSIG on Linux, a watchdog thread
elsewhere), whatever a killed process had committed stays, and a run's
lease is not granted while a worker of an earlier holder still lives, so `resume` never runs a thread next to
a leftover worker. `resume` re-plans, splits again (possibly into another N) and every thread continues from its
last checkpoint, reusing the replies already stored.

`--max-cost` across workers: each worker reserves the worst case of its own calls before starting them and
re-reads the run's spend from the store (every BUDGET_READ_SECONDS), so the others' spending counts too. What
it cannot see are the other workers' calls in flight: the limit may be exceeded by at most those.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from skillweave.errors import UsageError
from skillweave.graphs import shards
from skillweave.graphs.progress import Progress
from skillweave.graphs.runtime import RunSummary, _spec, execute, recorded_status, run_context
from skillweave.pipeline import Pipeline
from skillweave.providers.prices import Budget
from skillweave.store import Store
from skillweave.store.leases import live_worker_leases

MAX_WORKERS = 64
REPORT_SECONDS = 0.25  # how often a worker sends its counts to the parent
BUDGET_READ_SECONDS = 0.2  # how often a worker re-reads the run's spend from the store under --max-cost
MODEL_FIELDS = ("model", "judge", "solver", "critic", "grader", "student", "teacher")
_COUNTS = ("done", "failed", "paused", "skipped", "crashed", "budget")


# ---- what --workers refuses ----------------------------------------------------------------------------------
def _local_model_field(config) -> tuple[str, str] | None:
    """(option, spec) of the first chat model of the run that is the embedded local model, if any."""
    from skillweave.providers.core import parse_spec
    from skillweave.providers.model_config import find_model

    for option in MODEL_FIELDS:
        spec = config.get(option)
        if not isinstance(spec, str) or not spec:
            continue
        try:
            kind, name = parse_spec(spec)
        except Exception:  # an unknown spec is reported by the run's own checks
            continue
        if kind == "local" or (kind == "named" and getattr(find_model(name), "kind", None) == "local"):
            return option, spec
    return None


def check_workers(pipeline: Pipeline, config, db_path: str, workers: int) -> None:
    """`Error: --workers ...` (exit 2) for a count or a run that several processes cannot share."""
    if workers == 1:
        return
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers {workers}: give 1 to {MAX_WORKERS} worker processes")
    pipeline = _spec(pipeline)
    if pipeline.graph is None:
        raise UsageError(f"--workers {workers}: {pipeline.name} runs have no per-thread plan to split between "
                         f"processes; use --workers 1")
    if type(config).shard_refused:
        raise UsageError(f"--workers {workers}: {pipeline.name} runs cannot be split between processes: "
                         f"{type(config).shard_refused}")
    if str(db_path) == ":memory:":
        raise UsageError(f"--workers {workers}: an in-memory store (--db :memory:) cannot be shared by worker "
                         f"processes; give a file")
    if config.get("batch"):
        raise UsageError(f"--workers {workers}: --batch sends the run's calls through the providers' batch APIs "
                         f"from one process; use --workers 1 with --batch")
    if (local := _local_model_field(config)) is not None:
        raise UsageError(f"--workers {workers}: --{local[0]} {local[1]} is the embedded local model; each worker "
                         f"would load its own copy and batch only its own requests. Use --workers 1 (one model "
                         f"batches every request in flight)")


# ---- --max-cost shared between processes ---------------------------------------------------------------------
class SharedBudget(Budget):
    """A worker's Budget that also counts what the other workers spent: the run's spend is re-read from the
    store before a reservation (at most every `every` seconds). The other workers' calls in flight are not in
    the store yet, so the run's spend may pass the limit by at most those calls."""

    def __init__(self, limit: float, spent: float, *, store: Store, run_id: str, every: float = BUDGET_READ_SECONDS):
        super().__init__(limit, spent)
        self.store, self.run_id, self.every = store, run_id, every
        self._start, self._own = float(spent), 0.0
        self._read_at = time.monotonic()

    def refresh(self) -> None:
        from skillweave.store.cost import run_spend

        stored = run_spend(self.store, self.run_id)["cost_usd"] or 0.0
        with self._lock:  # the store lags this worker's own calls by at most one uncommitted tick
            self.spent = max(self._start + self._own, stored)
        self._read_at = time.monotonic()

    def reserve(self, spec: str, messages: list[dict], max_tokens: int, n: int) -> float:
        if time.monotonic() - self._read_at >= self.every:
            self.refresh()
        return super().reserve(spec, messages, max_tokens, n)

    def settle(self, reserved: float, cost: float | None) -> None:
        with self._lock:
            self._own += cost or 0.0
        super().settle(reserved, cost)


# ---- the worker process ------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its parent: a `resume` after the parent was killed would otherwise find the
    run's lease free while this process still executes threads."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:  # where PR_SET_PDEATHSIG does not exist
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _counts(summary: RunSummary) -> dict:
    return {name: getattr(summary, name) for name in _COUNTS}


async def _report(conn, summary: RunSummary) -> None:
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        conn.send(("progress", _counts(summary)))


async def _work(job: dict, conn) -> dict:
    from skillweave.pipelines import get_pipeline
    from skillweave.store.leases import RunLease, worker_lease_id

    store = Store(job["db"])
    try:
        pipeline = get_pipeline(job["pipeline"])
        with RunLease(store, worker_lease_id(job["run_id"], job["index"]),
                      command=f"worker {job['index'] + 1}/{job['workers']}: {job['command']}"):
            ctx = run_context(pipeline, store, job["run_id"], prompts_dir=job["prompts_dir"],
                              concurrency=job["concurrency"], allow_changed_prompts=job["allow_changed_prompts"])
            if ctx.budget is not None:
                ctx.budget = SharedBudget(ctx.budget.limit, ctx.budget.spent, store=store, run_id=job["run_id"])
            summary = RunSummary(run_id=job["run_id"], threads=len(job["specs"]))
            reporter = asyncio.get_running_loop().create_task(_report(conn, summary))
            cpu, wall, started = time.process_time(), time.perf_counter(), time.time()
            # Writes grouped into one transaction per event-loop tick, as in one process (the default): measured on
            # the idle 2-core machine, 2 workers made 1.12-1.27x the requests/s of per-write commits at 0.75-0.85x
            # the CPU per request (benchmarks/workers.py), although a tick's transaction holds SQLite's one write
            # lock while the tick runs. `tick_batching=False` commits each write at once.
            batching = store.batch_writes() if job.get("tick_batching", True) else contextlib.nullcontext()
            try:
                with batching:
                    await execute(pipeline, ctx, concurrency=job["concurrency"], progress=False,
                                  retry_failed=job["retry_failed"], planned=job["specs"], summary=summary)
            finally:
                reporter.cancel()
        # CPU and wall seconds of executing the threads (start-up and planning aside): for benchmarks/workers.py
        return {"summary": asdict(summary), "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                "started_at": started}
    finally:
        store.close()


def worker_main(job: dict, conn) -> None:
    """Entry point of one worker process (spawned): run its threads, send ("done", summary) or ("error", text)."""
    _die_with_parent(job["parent_pid"])
    try:
        result = asyncio.run(_work(job, conn))
    except BaseException as exc:  # reported to the parent, which records the run's status
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        sys.exit(1)
    conn.send(("done", result))
    conn.close()


# ---- the parent -------------------------------------------------------------------------------------------
@dataclass
class WorkersSummary(RunSummary):
    """A run's summary over its workers. `lost`: threads a worker left unfinished because it died (counted in
    `crashed` too; `resume` continues them). `per_worker`: per worker, {threads (given), finished, error, and for
    a worker that finished: cpu_s and wall_s, its process's CPU and wall seconds spent executing threads, and the
    Unix time started_at when it began}."""

    lost: int = 0
    per_worker: list = field(default_factory=list)


class _Worker:
    def __init__(self, index: int, process, conn, threads: int):
        self.index, self.process, self.conn, self.threads = index, process, conn, threads
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.result: dict | None = None
        self.error: str | None = None
        self.finished = False

    def poll(self) -> None:
        if self.finished:
            return
        alive = self.process.is_alive()  # read before draining: a worker sends its result, then exits
        try:
            while self.conn.poll():
                kind, data = self.conn.recv()
                if kind == "progress":
                    self.counts = data
                elif kind == "done":
                    self.result, self.finished = data, True
                    self.counts = _counts(RunSummary(**data["summary"]))
                elif kind == "error":
                    self.error, self.finished = data, True
        except (EOFError, OSError):
            alive = False
        if not self.finished and not alive:
            self.process.join()
            code = self.process.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
            self.error, self.finished = f"its process (pid {self.process.pid}) {how}", True

    def unfinished(self) -> int:
        return max(0, self.threads - sum(self.counts.values()))


def _total(run_id: str, threads: int, workers: list[_Worker]) -> WorkersSummary:
    total = WorkersSummary(run_id=run_id, threads=threads)
    for w in workers:
        for name in _COUNTS:
            setattr(total, name, getattr(total, name) + w.counts.get(name, 0))
        if w.result is not None:
            done = w.result["summary"]
            total.errors += done["errors"]
            total.budget_reason = total.budget_reason or done["budget_reason"]
            for status, n in done["statuses"].items():
                total.statuses[status] = total.statuses.get(status, 0) + n
        elif w.error is not None and w.finished:
            missing = w.unfinished()
            total.crashed += missing
            total.lost += missing
            total.errors.append(f"worker {w.index + 1} stopped with {missing} of its {w.threads} thread(s) "
                                f"unfinished: {w.error}")
        total.per_worker.append({"threads": w.threads, "finished": sum(w.counts.values()), "error": w.error,
                                 **{k: v for k, v in (w.result or {}).items() if k != "summary"}})
    return total


@contextlib.contextmanager
def _sigint_ignored():
    """Workers start with Ctrl-C ignored (the disposition survives exec): the parent handles it and stops them."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def _coordinate(pipeline: Pipeline, store: Store, run_id: str, specs: list, workers: int, job: dict, *,
                      progress: bool, progress_every: float | None) -> WorkersSummary:
    parts = [specs[i::workers] for i in range(workers)]
    spawn = multiprocessing.get_context("spawn")
    running: list[_Worker] = []
    total = WorkersSummary(run_id=run_id, threads=len(specs))
    bar = Progress(len(specs), pipeline.name, enabled=progress, summary=total, store=store, run_id=run_id,
                   every=progress_every)
    bar.start()
    shown = 0
    try:
        with _sigint_ignored():
            for index, part in enumerate(parts):
                receive, send = spawn.Pipe(duplex=False)
                process = spawn.Process(target=worker_main, name=f"skillweave-worker-{index + 1}", daemon=True,
                                        args=({**job, "index": index, "specs": part}, send))
                process.start()
                send.close()
                running.append(_Worker(index, process, receive, len(part)))
        while True:
            for w in running:
                w.poll()
            current = _total(run_id, len(specs), running)
            for name in (*_COUNTS, "errors", "statuses", "budget_reason", "lost", "per_worker"):
                setattr(total, name, getattr(current, name))  # the bar's summary is read live
            finished = sum(getattr(total, name) for name in _COUNTS)
            if finished > shown:
                bar.update(finished - shown)
                shown = finished
            if all(w.finished for w in running):
                for w in running:
                    if w.error is not None:  # also in the run's events, for `items lineage` / debugging
                        store.add_event(run_id, None, "worker", "stopped", f"worker {w.index + 1}: {w.error}")
                return total
            await asyncio.sleep(0.05)
    finally:
        for w in running:  # Ctrl-C or an error here: the workers stop (their committed work stays)
            if w.process.is_alive():
                w.process.terminate()
        for w in running:
            w.process.join(10)
            w.conn.close()
        with contextlib.suppress(Exception):  # the leases of workers that were killed: their rows go now
            live_worker_leases(store, run_id)
        bar.close()


def run_with_workers(pipeline: Pipeline, store: Store, run_id: str, *, workers: int, prompts_dir: str | None = None,
                     concurrency: int = 8, progress: bool = True, retry_failed: bool = False,
                     allow_changed_prompts: bool = False, progress_every: float | None = None,
                     tick_batching: bool = True) -> WorkersSummary:
    """Run (or resume) a run with `workers` processes, each with `concurrency` threads in flight; records the
    run's final status like `graphs.runtime.run_pipeline`. `tick_batching` (on by default) makes each worker
    group its writes into one transaction per event-loop tick as one process does; off, each write commits at
    once (benchmarks/workers.py compares both)."""
    from skillweave.store.leases import RunLease

    pipeline = _spec(pipeline)
    command = " ".join(sys.argv[1:])
    with RunLease(store, run_id, command=command):
        ctx = run_context(pipeline, store, run_id, prompts_dir=prompts_dir, concurrency=concurrency,
                          allow_changed_prompts=allow_changed_prompts)  # a changed template stops here
        check_workers(pipeline, ctx.config, store.path, workers)
        specs = list(shards.select(pipeline.plan(ctx), ctx.config.get("shard")))  # planned once, items created here
        job = {"db": store.path, "run_id": run_id, "pipeline": pipeline.name, "prompts_dir": prompts_dir,
               "concurrency": concurrency, "allow_changed_prompts": allow_changed_prompts,
               "retry_failed": retry_failed, "parent_pid": os.getpid(), "workers": workers, "command": command,
               "tick_batching": tick_batching}
        with recorded_status(store, run_id):
            summary = asyncio.run(_coordinate(pipeline, store, run_id, specs, max(1, min(workers, len(specs))),
                                              job, progress=progress, progress_every=progress_every))
        store.set_run_status(run_id, summary.status, error=summary.error)
    return summary
