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
kind, statements and µs of CPU per request (the timing wrapper adds its own cost to that run only); `--profile` runs
it under cProfile and prints self time by function group (store, graph, grading, plan, templates, nodes, provider,
JSON, event loop), each also as µs of the CPU per request measured without the profiler.

    python benchmarks/pipeline_overhead.py --against main --rounds 9
    python benchmarks/pipeline_overhead.py --sql --rounds 0
    python benchmarks/pipeline_overhead.py --profile --rounds 0
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


def sql_breakdown(concurrency: int, items: int, latency: float, quiet: bool = False) -> float:
    """One run of this checkout with every statement timed; per statement kind, count and µs per request (returns
    the statements' µs per request)."""
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
    sql_us = 1e6 * sum(s for _, s in totals.values()) / requests
    if quiet:
        return sql_us
    print(f"SQLite statements, this checkout, {items} items ({requests} requests); CPU {cpu_ms:.3f} ms/request with "
          f"the timing wrapper:")
    for kind, (count, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"  {count / requests:5.2f} per request {1e6 * seconds / requests:7.1f} µs/request  {kind}")
    print(f"  all statements: {sum(c for c, _ in totals.values()) / requests:.2f} per request, "
          f"{sql_us:.1f} µs/request (this thread's CPU time inside execute)")
    return sql_us


# function groups of `--profile`: the first pattern found in a function's file decides (checked in this order)
GROUPS = [
    ("store: Python around the statements", ("skillweave/store/",)),
    ("graph: direct executor, runtime, final checkpoint", ("skillweave/graphs/", "langgraph", "ormsgpack")),
    ("grading (judge tables, sentence count)", ("skillweave/metrics/",)),
    ("plan (the sampler's shuffles, lazy plan)", ("skillweave/agents/compactplan", "skillweave/agents/lazyplan",
                                                  "random.py", "skillweave/catalog")),
    ("templates (Jinja rendering, versions)", ("jinja2", "skillweave/prompts/", "<template>")),
    ("nodes and call_template (messages, call keys)", ("skillweave/agents/",)),
    ("provider (bound, timeout, retries, reply decoding)", ("skillweave/providers/", "pipeline_overhead")),
    ("JSON encoding and decoding", ("json/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
]


def _group(func: tuple) -> str | None:
    """The group of a profiled function, or None for a builtin (its time goes to its callers' groups)."""
    path, _, name = func
    if path == "~":
        return "SQLite statements (sqlite3 execute)" if "sqlite3" in name else None
    for label, patterns in GROUPS:
        if any(p in path for p in patterns):
            return label
    return "other (stdlib: uuid, hashlib, contextlib ...)"


def profile_groups(concurrency: int, items: int, latency: float, sql_us: float) -> None:
    """cProfile of one run of this checkout (the run only, after a warm-up run): self time by function group, a
    builtin's time given to the groups of its callers (in proportion to its time under each). The statements are
    given `sql_us` (timed without the profiler, `sql_breakdown`), and the CPU per request measured without the
    profiler, less that, is shared among the other groups by their profiled self time."""
    import cProfile
    import pstats

    import skillweave.graphs.runtime as runtime

    measure(concurrency, 8, latency)
    plain_ms = statistics.median(measure(concurrency, items, latency) for _ in range(3))
    profiler, run = cProfile.Profile(), runtime.run_pipeline

    def profiled(*args, **kwargs):
        profiler.enable()
        try:
            return run(*args, **kwargs)
        finally:
            profiler.disable()

    runtime.run_pipeline = profiled
    try:
        measure(concurrency, items, latency)
    finally:
        runtime.run_pipeline = run
    stats = pstats.Stats(profiler).stats
    groups: dict[str, float] = {}
    for func, (_, _, self_s, _, callers) in stats.items():
        group = _group(func)
        if group is None:  # a builtin: split by caller
            edges = {c: v[2] for c, v in callers.items()}
            total = sum(edges.values())
            for caller, share in edges.items():
                g = _group(caller) or "other (stdlib: uuid, hashlib, contextlib ...)"
                groups[g] = groups.get(g, 0.0) + (self_s * share / total if total else 0.0)
            if not edges:
                groups["other (stdlib: uuid, hashlib, contextlib ...)"] = groups.get(
                    "other (stdlib: uuid, hashlib, contextlib ...)", 0.0) + self_s
        else:
            groups[group] = groups.get(group, 0.0) + self_s
    idle = sum(v[2] for f, v in stats.items() if f[0] == "~" and "poll" in f[2])  # waiting in epoll: not CPU
    groups["asyncio event loop"] = groups.get("asyncio event loop", 0.0) - idle
    sql_label = "SQLite statements (sqlite3 execute)"
    profiled_sql = groups.pop(sql_label, 0.0)
    rest = sum(groups.values())
    rest_us = max(0.0, 1000 * plain_ms - sql_us)
    print(f"CPU {plain_ms:.3f} ms/request without the profiler (median of 3 runs); {items} items, {3 * items} requests. "
          f"Statements timed alone: {sql_us:.1f} µs/request ({100 * profiled_sql / (rest + profiled_sql):.0f}% of the "
          f"profiled self time); the rest, {rest_us:.1f} µs/request, shared by profiled self time (builtins given to "
          f"their callers' groups):")
    print(f"  ~{sql_us:6.1f} µs/request  {sql_label} (timed, wrapper included)")
    for label, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  ~{rest_us * seconds / rest:6.1f} µs/request  {100 * seconds / rest:5.1f}% of the rest  {label}")


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
    parser.add_argument("--profile", action="store_true",
                        help="Then profile one run of this checkout (cProfile) and print self time by function group.")
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
        pairs = [y / x for x, y in zip(va, vb, strict=True)]  # one pair per round, run back to back
        print(f"{b} / {a} per round: median {statistics.median(pairs):.3f} (range {min(pairs):.3f}-{max(pairs):.3f}); "
              f"{b} lower in {sum(p < 1 for p in pairs)} of {len(pairs)} rounds")
    print(f"concurrency {args.concurrency}, {args.items} items, in-process latency {args.latency * 1000:.0f} ms, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    sql_us = sql_breakdown(args.concurrency, args.items, args.latency) if args.sql else None
    if args.profile:
        if sql_us is None:
            sql_us = sql_breakdown(args.concurrency, args.items, args.latency, quiet=True)
        profile_groups(args.concurrency, args.items, args.latency, sql_us)


if __name__ == "__main__":
    main()
