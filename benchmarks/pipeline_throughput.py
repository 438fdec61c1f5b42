"""Skill-Mix pipeline throughput through the `openai:` provider against a local mock server.

Prints, measured in one run on the same server and concurrency:
  - the pipeline's items/s and requests/s,
  - the ideal items/s = concurrency / (sequential calls per item x latency),
  - a bare OpenAI SDK loop's requests/s (the practical limit on this machine),
and the ratios. Goal: pipeline requests/s >= 90% of the bare loop's at concurrency 64.

    python benchmarks/pipeline_throughput.py --concurrency 64 --latency 0.2 --items 256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mock_openai import run_in_process  # noqa: E402

CALLS_PER_ITEM = 3  # student turn 0, student turn 1, one judge call (n samples in one request)


async def bare_loop(concurrency: int, requests: int) -> float:
    import openai

    client = openai.AsyncOpenAI(max_retries=0)
    remaining = requests

    async def worker():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.chat.completions.create(
                model="mock", messages=[{"role": "user", "content": "Please write a short text."}],
                temperature=0.7, max_tokens=512, n=1,
            )

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return requests / elapsed


def pipeline(concurrency: int, items: int, db: str) -> tuple[float, float, int]:
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.store import Store

    store = Store(db)
    config = {
        "k": [2], "n": items, "rounds": 1, "seed": 10, "model": "openai:mock", "judge": "openai:mock",
        "grading_samples": 3, "concurrency": concurrency, "temperature": 0.7, "judge_temperature": 0.7,
        "max_tokens": 512, "student_template": "skillmix/student", "judge_template": "skillmix/judge",
        "skills_catalog": store.save_catalog("b", "skills", [s.as_dict() for s in bundled_skills()]),
        "topics_catalog": store.save_catalog("b", "topics", [{"name": t} for t in bundled_topics()]),
    }
    run_id = store.create_run("skillmix", config)
    start = time.perf_counter()
    summary = run_pipeline("skillmix", store, run_id, concurrency=concurrency, progress=False)
    elapsed = time.perf_counter() - start
    calls = store.db["llm_calls"].count_where("error is null")
    assert summary.done == items and calls == items * CALLS_PER_ITEM, (summary, calls)
    return items / elapsed, calls / elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="Mock server latency per request (s).")
    parser.add_argument("--items", type=int, default=256, help="Skill-Mix combinations (3 requests each).")
    args = parser.parse_args()

    proc, port = run_in_process(args.latency)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "mock"
    try:
        asyncio.run(bare_loop(args.concurrency, args.concurrency * 2))  # warm up connections and imports
        bare_rps = asyncio.run(bare_loop(args.concurrency, args.items * CALLS_PER_ITEM))
        with tempfile.TemporaryDirectory() as tmp:
            pipeline(args.concurrency, 8, os.path.join(tmp, "warmup.db"))  # imports, template compilation
            items_ps, pipe_rps, calls = pipeline(args.concurrency, args.items, os.path.join(tmp, "bench.db"))
    finally:
        proc.terminate()
    ideal_items = args.concurrency / (CALLS_PER_ITEM * args.latency)
    print(f"concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms, {args.items} items, {calls} requests")
    print(f"ideal items/s            {ideal_items:8.1f}")
    print(f"pipeline items/s         {items_ps:8.1f}   ({items_ps / ideal_items:.0%} of ideal)")
    print(f"pipeline requests/s      {pipe_rps:8.1f}")
    print(f"bare SDK loop requests/s {bare_rps:8.1f}")
    print(f"pipeline / bare loop     {pipe_rps / bare_rps:8.2f}   (goal >= 0.90)")


if __name__ == "__main__":
    main()
