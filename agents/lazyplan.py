"""A run's plan produced as it is taken: `LazyPlan` knows how many threads it holds without building them.

A pipeline's `plan(ctx)` may return a list of `ThreadSpec`s or a `LazyPlan`. The runtime (graphs/runtime.py)
takes threads from it in small batches as its workers become free, so a run holds a batch of specs at a time,
not one per item: items are created in the store as their thread is scheduled, inside the event-loop tick's
write transaction (`Store.batch_writes`). Iterating a `LazyPlan` again starts from its first thread again
(creating items is idempotent: `Store.ensure_item`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator


class LazyPlan:
    """`count` threads, in plan order, produced by `threads()` each time the plan is iterated."""

    def __init__(self, count: int, threads: Callable[[], Iterable]):
        self.count, self._threads = int(count), threads

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        produced = 0
        for spec in self._threads():
            produced += 1
            yield spec
        if produced != self.count:  # a wrong count would misreport progress and the summary: say so loudly
            raise RuntimeError(f"the plan said {self.count} threads and produced {produced}")

    def positions(self, keep: Callable[[int], bool], count: int) -> LazyPlan:
        """The threads at the plan positions `keep` accepts (`count` of them), still produced lazily; the
        threads in between are still produced (and their items created), as the whole plan would."""
        return LazyPlan(count, lambda: (s for p, s in enumerate(self) if keep(p)))
