"""Lookups that read file state (a template's file, the models file for a price) made once per event-loop turn.

Every model call loads its template (an `os.stat` of the template file, to notice an edit) and prices its model
(an `os.stat` of the models file, often two when the local file is absent). A system call costs 15-20 µs on the
2-core machine the benchmarks run on, about a tenth of the client's CPU per request at concurrency 256
(docs/benchmarks.md). A run at that concurrency handles dozens of replies per loop turn, and they all ask the
same questions of the same files, so `once_per_tick` keeps each answer until the loop's next turn: an edit is
noticed by the calls of the next turn instead of the next call, and nothing is cached across turns, runs, event
loops or threads. Outside a running event loop every call looks up afresh.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from typing import Any


class _Turn(threading.local):
    loop: Any = None
    values: dict | None = None


_turn = _Turn()


def once_per_tick(key: Hashable, compute: Callable, *args) -> Any:
    """`compute(*args)`, or its value from earlier in this event-loop turn under the same `key`. An exception is
    raised to every caller and not kept."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return compute(*args)
    turn = _turn
    values = turn.values
    if turn.loop is not loop or values is None:
        turn.loop, turn.values = loop, {}
        values = turn.values
    try:
        return values[key]
    except KeyError:
        pass
    value = compute(*args)
    if not values:  # the first value of this turn: forget them all when the loop turns
        loop.call_soon(_forget, values)
    values[key] = value
    return value


def _forget(values: dict) -> None:
    values.clear()
