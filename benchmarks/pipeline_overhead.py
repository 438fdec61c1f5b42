"""What the Skill-Mix pipeline costs on top of HTTP: client CPU per request with an in-process `openai:` provider.

`benchmarks/pipeline_throughput.py` measures the pipeline against a mock server in another process, so its CPU per
request holds aiohttp's work too, and on a shared machine it moves by ±10% from run to run. Here the provider is
an `OpenAIProvider` whose `_chat` waits `--latency` seconds on the event loop and decodes a canned chat-completions
body (the mock server's replies, through the same `openai_reply`): no socket, no server process. What is left per
request is the pipeline's own work (graph, store writes and commits, templates, request encoding, call keys,
grading, bookkeeping), which is what a change to those parts moves.

Trees are compared as in `pipeline_cpu_ab.py`: `--against REF` (git REF in a temporary worktree as `before`, this
checkout as `after`) or two `--tree NAME=DIR` (neither: the skillweave this interpreter imports), a fresh process per
run, alternated; per tree the median and the worst round. `--sql` then runs this checkout once more with every SQLite statement timed and prints, per statement
kind, statements and µs of CPU per request (the timing wrapper adds its own cost to that run only).

    python benchmarks/pipeline_overhead.py --against main --rounds 9
    python benchmarks/pipeline_overhead.py --sql --rounds 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

ONE_RUN = """
import json, os, sys, tempfile
sys.path.insert(0, {here!r})
import pipeline_overhead as po
import skillweave
print(json.dumps({{"cpu_ms": po.measure({c}, {n}, {latency}), "file": skillweave.__file__}}))
"""


def canned_replies():
    """The mock server's two reply bodies (student, and a judge table with 3 samples), as bytes."""
    from mock_openai import JUDGE, STUDENT

    def body(text: str, n: int) -> bytes:
        return json.dumps({"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "mock",
                           "choices": [{"index": i, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}} for i in range(n)],
                           "usage": {"prompt_tokens": 300, "completion_tokens": 20 * n,
                                     "total_tokens": 300 + 20 * n}}).encode()

    return body(STUDENT, 1), body(JUDGE, 3)


def install_provider(concurrency: int, latency: float) -> None:
    """Register `openai:mock` as an in-process provider: the bound, timeout, retries and reply decoding of the
    `openai:` client, no HTTP."""
    import asyncio

    from skillweave.providers.core import OpenAIProvider, clear_providers, openai_reply, register_provider

    student, judge = canned_replies()

    class InProcess(OpenAIProvider):
        times_out_itself = False  # no aiohttp here: `chat` sets the one timer per attempt, as aiohttp does over HTTP

        async def _chat(self, request):
            await asyncio.sleep(latency)
            return openai_reply(judge if request.n > 1 else student, self.url)

    os.environ.setdefault("OPENAI_API_KEY", "mock")
    clear_providers()
    register_provider("openai:mock", InProcess("mock", max_concurrency=concurrency), max_concurrency=concurrency)


def measure(concurrency: int, items: int, latency: float) -> float:
    """CPU ms per request of one Skill-Mix run (after an 8-item warm-up run) with the in-process provider."""
    import tempfile

    import pipeline_throughput as pt

    with tempfile.TemporaryDirectory() as tmp:
        install_provider(concurrency, latency)
        pt.pipeline(concurrency, 8, os.path.join(tmp, "warm.db"), probe=False)
        install_provider(concurrency, latency)
        _, _, calls = pt.pipeline(concurrency, items, os.path.join(tmp, "run.db"), probe=False)
    return 1000 * pt.pipeline.cpu_s / calls


def sql_breakdown(concurrency: int, items: int, latency: float) -> None:
    """One run of this checkout with every statement timed; per statement kind, count and µs per request."""
    import sqlite3
    import time

    from skillweave import store as store_module

    totals: dict[str, list] = {}

    class Timed(sqlite3.Connection):
        def execute(self, sql, *args):
            start = time.thread_time()  # CPU time: a statement descheduled on a busy machine reads the same
            try:
                return super().execute(sql, *args)
            finally:
                words = sql.split()
                kind = " ".join(words[:4] if words[0].upper() in ("INSERT", "SELECT") else words[:2])
                entry = totals.setdefault(kind[:60], [0, 0.0])
                entry[0] += 1
                entry[1] += time.thread_time() - start

    connect = sqlite3.connect
    shim = type(sys)("sqlite3_timed")
    shim.__dict__.update(sqlite3.__dict__)
    shim.connect = lambda *a, **k: connect(*a, factory=Timed, **k)
    store_module.sqlite3 = shim  # the store opens its connections through this name
    try:
        measure(concurrency, 8, latency)
        totals.clear()
        cpu_ms = measure(concurrency, items, latency)
    finally:
        store_module.sqlite3 = sqlite3
    requests = 3 * items
    print(f"SQLite statements, this checkout, {items} items ({requests} requests); CPU {cpu_ms:.3f} ms/request with "
          f"the timing wrapper:")
    for kind, (count, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"  {count / requests:5.2f} per request {1e6 * seconds / requests:7.1f} µs/request  {kind}")
    print(f"  all statements: {sum(c for c, _ in totals.values()) / requests:.2f} per request, "
          f"{1e6 * sum(s for _, s in totals.values()) / requests:.1f} µs/request (this thread's CPU time inside execute)")


def spread(values: list[float], worst: str) -> str:
    w = min(values) if worst == "min" else max(values)
    return f"median {statistics.median(values):.3f} (worst {w:.3f}, range {min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR (DIR holds skillweave/)")
    parser.add_argument("--against", metavar="REF",
                        help="Compare git REF (e.g. main), checked out in a temporary worktree, with this checkout.")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.02, help="Seconds each in-process reply waits.")
    parser.add_argument("--items", type=int, default=1024, help="Skill-Mix combinations (3 requests each).")
    parser.add_argument("--rounds", type=int, default=7, help="Runs per tree, alternated.")
    parser.add_argument("--sql", action="store_true", help="Then time every SQLite statement of one run.")
    args = parser.parse_args()
    if args.tree and args.against:
        parser.error("give --against REF or --tree NAME=DIR, not both")
    from pipeline_cpu_ab import against

    trees = [t.split("=", 1) for t in args.tree]
    with against(args.against) if args.against else contextlib.nullcontext(trees) as trees:
        if not trees:  # the skillweave this interpreter imports (its PYTHONPATH)
            trees = [["this", os.environ.get("PYTHONPATH", "")]]
        results: dict[str, list[float]] = {name: [] for name, _ in trees}
        for r in range(args.rounds if trees else 0):
            for name, tree in trees if r % 2 == 0 else list(reversed(trees)):
                code = ONE_RUN.format(here=str(HERE), c=args.concurrency, n=args.items, latency=args.latency)
                out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": tree},
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                row = json.loads(out)
                results[name].append(row["cpu_ms"])
                print(f"round {r} {name:8s} {row['cpu_ms']:.3f} CPU ms/request without HTTP  ({row['file']})",
                      flush=True)
    for name, values in results.items():
        if values:
            print(f"{name:8s} CPU ms/request without HTTP {spread(values, 'max')}")
    if len(results) == 2 and all(results.values()):
        (a, va), (b, vb) = results.items()
        print(f"{b} / {a} (medians): {statistics.median(vb) / statistics.median(va):.3f}")
    print(f"concurrency {args.concurrency}, {args.items} items, in-process latency {args.latency * 1000:.0f} ms, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.sql:
        sql_breakdown(args.concurrency, args.items, args.latency)


if __name__ == "__main__":
    main()
