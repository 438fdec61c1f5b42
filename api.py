"""The Python API: start, resume and read runs from a script or a notebook.

    import skillweave
    handle = skillweave.run("skillmix", k=2, n=5, model="fake", db="x.db")
    handle = await skillweave.arun("skillmix", k=2, n=5, model="fake", db="x.db")   # inside a running loop
    handle.run_id, handle.status, handle.metrics, handle.to_dataset()

`run` works in a plain script and in a notebook cell (where an event loop is already running, it drives the
run on a worker thread with its own loop); `arun` runs on the caller's loop. Both record the run's status
(done / paused / failed / interrupted) exactly as the command line does. docs/python-api.md has examples.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skillweave.errors import UsageError
from skillweave.pipeline import Pipeline, PipelineConfig
from skillweave.pipelines import get_pipeline
from skillweave.prompts import load_template
from skillweave.store import Store, default_db_path, queries


def create_run(store: Store, pipeline: str | Pipeline, config: PipelineConfig | dict, *,
               catalogs: dict[str, tuple] | None = None, command: str = "", prompts_dir: str | None = None) -> str:
    """Check settings and templates, store the input catalogs and the run; returns the run id (nothing runs)."""
    spec = get_pipeline(pipeline)
    config = spec.new_config(config if isinstance(config, PipelineConfig) else dict(config))
    if config.shard:
        from skillweave.graphs.shards import check

        check(spec.name, config)  # before any catalog or run is stored
    for template in config.templates():
        load_template(template, prompts_dir)  # unknown / malformed templates fail before anything is written
    catalog_ids = {}
    for role, (name, kind, entries, source) in (catalogs or {}).items():
        catalog_ids[role] = store.save_catalog(name, kind, entries, source=source)
        setattr(config, f"{role}_catalog", catalog_ids[role])
    run_id = None
    if config.shard:  # every shard of one run shares its id, so `merge` joins them (graphs/shards.py)
        from skillweave.graphs.shards import sharded_run_id

        run_id = sharded_run_id(spec.name, config.model_dump())
        if queries.run_exists(store, run_id):
            raise UsageError(f"run {run_id} (this shard's run) is already in {store.path}; continue it with "
                             f"`skillweave resume {run_id}`, or give each shard its own --db")
    run_id = store.create_run(spec.name, config.model_dump(), command=command, run_id=run_id)
    for role, catalog_id in catalog_ids.items():
        store.link_run_catalog(run_id, catalog_id, role)
    return run_id


@dataclass
class RunHandle:
    """A run in a store: its id, status, summary of the last execution, metrics and data."""

    run_id: str
    pipeline: str
    db: str
    summary: Any = None
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db)
        return self._store

    @property
    def status(self) -> str:
        return self.store.get_run(self.run_id)["status"]

    @property
    def config(self) -> PipelineConfig:
        return get_pipeline(self.pipeline).load_config(self.store.get_run(self.run_id)["config"])

    @property
    def metrics(self) -> dict:
        """The pipeline's report of the run (what `skillweave report RUN --json` prints, plus the table), with
        `parse_failures` per step."""
        from skillweave.metrics.parse_failures import parse_failures

        reporter = get_pipeline(self.pipeline).reporter()
        if reporter is None:
            raise UsageError(f"pipeline '{self.pipeline}' has no report")
        result = reporter(self.store, self.store.get_run(self.run_id))
        return {**result, "parse_failures": parse_failures(self.store, self.run_id)}

    def items(self, status: str | None = None) -> list[dict]:
        return list(self.store.items(self.run_id, status=status))

    def to_dataset(self, shape: str = "alpaca", *, status: str | None = "done", min_score: float | None = None,
                   full_marks: bool = False, reviewed_only: bool = False, system: str | None = None):
        """The run's items as a Hugging Face `datasets.Dataset` in an export shape (alpaca, messages,
        prompt-completion, preference), filtered as `skillweave export` filters."""
        from datasets import Dataset

        from skillweave.export import ExportFilters, collect
        from skillweave.export.writers import shape_rows

        filters = ExportFilters(status=status, min_score=min_score, full_marks=full_marks,
                                reviewed_only=reviewed_only)
        examples, dropped, _runs, _seen = collect(self.store, [self.run_id], filters, pairs=shape == "preference")
        if not examples:
            reasons = "; ".join(f"{n} {r}" for r, n in dropped.most_common()) or "the run has no items"
            raise UsageError(f"no rows in run {self.run_id} after filters ({reasons})")
        return Dataset.from_list(shape_rows(examples, shape, system=system))


def _prepare(pipeline: str | Pipeline, db: str | None, prompts_dir: str | None, inputs: dict | None,
             settings: dict) -> tuple[Pipeline, Store, str]:
    spec = get_pipeline(pipeline)
    if spec.inputs is None and any(f.endswith("_catalog") and not settings.get(f)
                                   for f in spec.config_model.model_fields):
        raise UsageError(f"pipeline '{spec.name}' prepares its inputs on the command line only "
                         f"(`skillweave run {spec.name} --help`); from Python, use resume() on such a run")
    config = spec.new_config(settings)
    store = Store(db)
    catalogs = spec.input_catalogs(config, **(inputs or {}))
    settings_text = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    run_id = create_run(store, spec, config, catalogs=catalogs, prompts_dir=prompts_dir,
                        command=f"skillweave.run({spec.name!r}, {settings_text})")
    return spec, store, run_id


def _check_workers(spec: Pipeline, config: Callable[[], PipelineConfig], db: str | None, workers: int) -> None:
    """`workers` is a count this run can use (graphs/workers.py refuses the embedded model, --batch ...)."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise UsageError(f"workers={workers!r}: give a number of worker processes (1 to 64)")
    if workers != 1:
        from skillweave.graphs.workers import check_workers

        check_workers(spec, config(), db or str(default_db_path()), workers)


async def _execute(spec: Pipeline, store: Store, run_id: str, *, workers: int, **options):
    """The run on this event loop, or (workers > 1) in worker processes, coordinated from a thread so that the
    caller's loop keeps running."""
    if workers == 1:
        from skillweave.graphs.runtime import arun_pipeline

        return await arun_pipeline(spec, store, run_id, **options)
    from skillweave.graphs.workers import run_with_workers

    return await asyncio.to_thread(run_with_workers, spec, store, run_id, workers=workers, **options)


async def arun(pipeline: str | Pipeline, *, db: str | None = None, prompts_dir: str | None = None,
               inputs: dict | None = None, progress: bool = False, workers: int = 1, **settings) -> RunHandle:
    """Start a run and await it on the running event loop (a notebook's, an application's).

    `settings` are the fields of the pipeline's config model (`skillweave run <pipeline> --help` lists them);
    `inputs` are the pipeline's input files (Skill-Mix: `skills=`, `topics=`; default: the bundled ones);
    `workers` > 1 runs it in that many processes sharing the store, as `--workers N` does."""
    spec = get_pipeline(pipeline)
    _check_workers(spec, lambda: spec.new_config(settings), db, workers)  # before the run row exists, as on the CLI
    spec, store, run_id = _prepare(spec, db, prompts_dir, inputs, settings)
    config = spec.load_config(store.get_run(run_id)["config"])
    summary = await _execute(spec, store, run_id, workers=workers, prompts_dir=prompts_dir,
                             concurrency=config.concurrency, progress=progress)
    return RunHandle(run_id, spec.name, store.path, summary, store)


async def aresume(run_id: str, *, db: str | None = None, prompts_dir: str | None = None,
                  concurrency: int | None = None, retry_failed: bool = False, workers: int = 1) -> RunHandle:
    """Finish an interrupted run (finished threads skipped, stored replies reused)."""
    store = Store(db)
    run = store.get_run(run_id)
    spec = get_pipeline(run["pipeline"])
    config = spec.load_config(run["config"])
    _check_workers(spec, lambda: config, store.path, workers)
    summary = await _execute(spec, store, run["id"], workers=workers, prompts_dir=prompts_dir,
                             concurrency=concurrency or config.concurrency, progress=False, retry_failed=retry_failed)
    return RunHandle(run["id"], spec.name, store.path, summary, store)


def _sync(coro_fn, *args, **kwargs):
    """Run a coroutine to completion from synchronous code, also where a loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn(*args, **kwargs))
    result: dict[str, Any] = {}

    def worker():
        try:
            result["value"] = asyncio.run(coro_fn(*args, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=worker, name="skillweave-run")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def run(pipeline: str | Pipeline, *, db: str | None = None, prompts_dir: str | None = None,
        inputs: dict | None = None, progress: bool = False, workers: int = 1, **settings) -> RunHandle:
    """Start a run and wait for it; see `arun`. Safe to call in a notebook cell."""
    handle = _sync(arun, pipeline, db=db, prompts_dir=prompts_dir, inputs=inputs, progress=progress,
                   workers=workers, **settings)
    handle._store = None  # the worker thread's connection stays with that thread
    return handle


def resume(run_id: str, *, db: str | None = None, prompts_dir: str | None = None, concurrency: int | None = None,
           retry_failed: bool = False, workers: int = 1) -> RunHandle:
    """Finish an interrupted run and wait for it; see `aresume`."""
    handle = _sync(aresume, run_id, db=db, prompts_dir=prompts_dir, concurrency=concurrency,
                   retry_failed=retry_failed, workers=workers)
    handle._store = None
    return handle
