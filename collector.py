"""Fewer garbage-collector passes while a run's threads execute, or while an export streams its rows.

Python starts a young-generation collection every 700 new container objects (dicts, lists, coroutine frames,
futures). A run at concurrency 256 allocates thousands per second, and its in-flight threads live long enough
to survive those passes: they are promoted to the older generations and, every few hundred passes, a full
collection walks every live object of the process (LangGraph, aiohttp, the templates: several hundred thousand).
At 50 ms latency and concurrency 256 that costs 0.11-0.14 ms of CPU per request in a process that has made a
few runs (benchmarks/pipeline_throughput.py prints it as "in GC"), about a seventh of the client's CPU.

`fewer_collections()` raises the young generation's threshold to `YOUNG` while the threads run, so a pass
comes every 50,000 allocations, most of a request's objects are gone by then, and few reach the old
generations. The collector stays on: cycles are still found, only later. The older generations' thresholds are
unchanged. Runs may overlap (two `arun` calls on one loop, the review page's worker thread): the first to
enter raises the threshold, the last to leave restores the one it found, so an overlapping run never restores
it early and a raised value never outlives the runs.

A streamed export (`export/`) uses the same window with a lower threshold (20,000): it keeps no rows, so the count
seldom gets there, and the full collections it would otherwise run (each walks every object of the process, its
imported modules included) cost 0.3-0.4 CPU s of a 10^5-item export.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

YOUNG = 50_000  # young-generation threshold while runs execute (Python's default: 700)

_lock = threading.Lock()
_active = 0
_saved: tuple[int, ...] | None = None
_raised: int | None = None  # the threshold this module set, if it set one


@contextmanager
def fewer_collections(young: int = YOUNG):
    """Young-generation collections every `young` allocations while the block runs (see the module docstring);
    the threshold found on entry is restored when the last overlapping block ends, also on errors. A threshold
    that is already higher, or 0 (automatic collection off), is left alone."""
    global _active, _saved, _raised
    with _lock:
        if _active == 0:
            _saved, _raised = gc.get_threshold(), None
        _active += 1
        current = gc.get_threshold()
        if current[0] and current[0] < young:
            gc.set_threshold(young, *current[1:])
            _raised = young
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                if _raised is not None and gc.get_threshold()[0] == _raised:  # not changed by someone else meanwhile
                    gc.set_threshold(*_saved)
                _saved = _raised = None
