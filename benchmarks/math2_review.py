"""Benchmark: the review queue as one SQL query vs. scanning every thread's checkpoint, and a finished run's
resume (every reply reused) vs. its first execution. Prints ratios measured in this one run.

    .venv/bin/python benchmarks/math2_review.py --threads 40
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from skillweave.agents.llm import RunContext
from skillweave.agents.math2 import default_config
from skillweave.agents.review import review_queue
from skillweave.graphs.runtime import paused_threads, run_pipeline
from skillweave.pipelines import get_pipeline
from skillweave.store import Store


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        skills = ["percentage", "gcd_lcm", "area_perimeter", "combinations", "linear_equations"]
        bank = store.save_catalog("bench", "bank", [{"name": s, "status": "coarse"} for s in skills],
                                  exemplars=[{"skill": s, "question": f"q about {s}", "answer": "\\boxed{1}"}
                                             for s in skills])
        run_id = store.create_run("math2", default_config(bank, model="fake", n=args.threads, reviewer="human"))
        start = time.perf_counter()
        first = run_pipeline(get_pipeline("math2"), store, run_id, progress=False)
        t_first = time.perf_counter() - start
        assert first.paused == args.threads
        ctx = RunContext(store=store, run_id=run_id, config=store.get_run(run_id)["config"])
        t_sql = timed(lambda: review_queue(store))
        t_scan = timed(lambda: asyncio.run(paused_threads(get_pipeline("math2"), ctx)))
        assert len(review_queue(store)) == len(asyncio.run(paused_threads(get_pipeline("math2"), ctx))) == args.threads
        calls = store.db["llm_calls"].count
        t_resume = timed(lambda: run_pipeline(get_pipeline("math2"), store, run_id, progress=False), repeat=1)
        assert store.db["llm_calls"].count == calls
    print(f"threads paused for review: {args.threads}")
    print(f"first run (fake model, {calls} calls): {t_first:.2f}s; resume with all threads paused: {t_resume:.2f}s "
          f"(ratio {t_first / t_resume:.1f}x)")
    print(f"review queue: SQL {t_sql * 1000:.1f} ms vs checkpoint scan {t_scan * 1000:.1f} ms "
          f"(ratio {t_scan / t_sql:.0f}x)")


if __name__ == "__main__":
    main()
