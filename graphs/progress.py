"""Run progress: a live bar on a terminal, a periodic one-line report on stderr otherwise (batch jobs, Slurm logs).

Both show threads finished out of the plan, how many ended failed or paused, and the tokens and cost of the run's
model calls so far (read from the store, at most once a second for the bar). Cost is the sum of `llm_calls.cost_usd`;
calls whose model has no price make it "unknown" or "at least $X" (store/cost.py), never $0.
"""

from __future__ import annotations

import asyncio
import sys
import time

from skillweave.store.cost import RunningSpend, format_spend

DEFAULT_EVERY = 60.0  # seconds between progress lines when stderr is not a terminal


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool, summary, store=None, run_id: str | None = None,
                 every: float | None = DEFAULT_EVERY, stream=None):
        self.total, self.label, self.summary = total, label, summary
        self.store, self.run_id = store, run_id
        self.stream = stream or sys.stderr
        self.every = DEFAULT_EVERY if every is None else float(every)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.finished = 0
        self._bar = None
        self._task: asyncio.Task | None = None
        self._tokens, self._tokens_at = 0, 0.0
        self._spend: dict = {"calls": 0, "cost_usd": None, "unpriced": 0}
        self._running = RunningSpend(store, run_id) if store is not None and run_id is not None else None
        self._started = time.monotonic()
        if enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="thread", leave=False, file=self.stream)

    def start(self) -> None:
        """Start the periodic line (only off a terminal, only with a positive interval); needs a running loop."""
        if self.enabled and not self.tty and self.every > 0:
            self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def _read(self, max_age: float) -> None:
        """Tokens and spend of the run's calls so far, from the store (the calls recorded since the last read;
        cached for `max_age` s)."""
        if self._running is None or time.monotonic() - self._tokens_at < max_age:
            return
        spend = self._running.read()
        self._tokens = int(spend["input_tokens"]) + int(spend["output_tokens"])
        self._spend = {"calls": spend["calls"], "cost_usd": spend["cost_usd"], "unpriced": spend["unpriced"]}
        self._tokens_at = time.monotonic()

    def tokens(self, max_age: float = 0.0) -> int:
        self._read(max_age)
        return self._tokens

    def cost(self, max_age: float = 0.0) -> str:
        """Spend so far: '$0.0123', 'at least $0.0123 (4 calls unpriced)' or 'unknown (4 calls unpriced)'."""
        self._read(max_age)
        return format_spend(self._spend)

    def counts(self) -> dict:
        s = self.summary
        return {"done": s.done, "failed": s.failed, "paused": s.paused}

    def line(self) -> str:
        c = self.counts()
        elapsed = time.monotonic() - self._started
        return (f"progress {self.label}: {self.finished}/{self.total} threads, {c['done']} done, {c['failed']} failed, "
                f"{c['paused']} paused, {self.tokens():,} tokens, cost {self.cost()}, {elapsed:.0f}s")

    def update(self, n: int = 1) -> None:
        self.finished += n
        if self._bar is not None:
            c = self.counts()
            self._bar.set_postfix(done=c["done"], failed=c["failed"], tokens=self.tokens(max_age=1.0),
                                  cost=self.cost(max_age=1.0), refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
