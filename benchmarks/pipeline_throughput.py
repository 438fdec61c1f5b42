"""Skill-Mix pipeline throughput through the `openai:` provider against a local mock server.

Prints, measured in one run on the same server and concurrency:
  - the pipeline's items/s and requests/s,
  - the ideal items/s = concurrency / (sequential calls per item x latency),
  - a bare OpenAI SDK loop's requests/s replaying the very same request bodies with the same concurrency
    (the issue's reference: the practical limit of an SDK client on this machine),
  - a bare loop of skillweave's own `openai:` provider replaying the same bodies (no store, no graph), which
    isolates what the pipeline itself costs: the provider talks HTTP through aiohttp, not the SDK,
  - a bare aiohttp loop that posts the recorded bodies three in sequence per item (the chain's shape) with the
    same concurrency: the floor any client reaches, with its client CPU ms per request,
and the ratios and the pipeline's client CPU ms per request. Goals: pipeline requests/s >= 90% of the bare SDK
loop's at concurrency 64 and 0.2 s; at 0.05 s and concurrency 256, <= 1.0 ms of CPU per request and >= 0.5 of
the bare aiohttp three-step loop.
By default the pipeline runs both ways first (`--executor both`: LangGraph's Pregel loop and the direct executor,
graphs/executor.py, alternated `--repeat` times, each round against its own three-step loop) and prints medians;
the summary lines below them describe one more run with the direct executor (or the one `--executor` names).

    python benchmarks/pipeline_throughput.py --concurrency 64 --latency 0.2 --items 256
    python benchmarks/pipeline_throughput.py --concurrency 256 --latency 0.05 --items 512 --repeat 3 --no-sdk
    python benchmarks/pipeline_throughput.py --named   # also through a models-file name (providers/fleet.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mock_openai import run_in_process  # noqa: E402

CALLS_PER_ITEM = 3  # student turn 0, student turn 1, one judge call (n samples in one request)


async def bare_loop(concurrency: int, requests: list[dict]) -> float:
    """Replay the given chat requests with the bare SDK, `concurrency` workers, no store and no graph."""
    import openai

    client = openai.AsyncOpenAI(max_retries=0)
    queue = list(reversed(requests))

    async def worker():
        while queue:
            body = queue.pop()
            await client.chat.completions.create(model="mock", **body)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return len(requests) / elapsed


async def bare_provider_loop(concurrency: int, requests: list[dict]) -> float:
    """Replay the same chat requests through skillweave's `openai:` provider alone (its HTTP client)."""
    from skillweave.providers.core import ChatRequest, OpenAIProvider, close_clients, register_provider

    provider = OpenAIProvider("mock", max_concurrency=concurrency)
    register_provider("openai:mock-bare", provider)  # so close_clients closes its session
    queue = list(reversed(requests))

    async def worker():
        while queue:
            body = queue.pop()
            await provider.chat(ChatRequest(messages=body["messages"], temperature=body["temperature"],
                                            max_tokens=body["max_tokens"], n=body["n"]))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await close_clients()
    return len(requests) / elapsed


async def bare_aiohttp_three_steps(concurrency: int, requests: list[dict]) -> tuple[float, float]:
    """The issue's floor: `concurrency` workers, each posting three recorded bodies in sequence per item (like
    the Skill-Mix chain) over one aiohttp session, parsing each reply; no store, no graph, no templates.
    Returns (requests/s, client CPU ms per request); `bare_aiohttp_three_steps.inflight` is the time-averaged
    number of requests in flight (the summed request times over the elapsed time)."""
    import aiohttp

    url = os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
    items = [requests[i:i + CALLS_PER_ITEM] for i in range(0, len(requests) - CALLS_PER_ITEM + 1, CALLS_PER_ITEM)]
    queue = list(reversed(items))
    sent, busy = 0, 0.0
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer mock"},
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            nonlocal sent, busy
            while queue:
                for body in queue.pop():
                    t = time.perf_counter()
                    async with session.post(url, json={"model": "mock", **body}) as response:
                        await response.json()
                    busy += time.perf_counter() - t
                    sent += 1

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    bare_aiohttp_three_steps.inflight = busy / elapsed
    return sent / elapsed, 1000 * cpu / sent


def recorded_requests(db: str) -> list[dict]:
    """The exact request bodies the pipeline sent (messages, n, temperature, max tokens), in call order."""
    from skillweave.store import Store, jload

    rows = Store(db).db.query("select request from llm_calls where error is null order by created_at")
    return [{k: v for k, v in jload(r["request"]).items()} for r in rows]


class Probe:
    """Where a pipeline run's wall time goes, measured on its event loop and printed beside each round's ratio:
    - `inflight`: requests in flight (posted, reply not yet read), time-averaged from the first request posted to
      the last reply read (the `window`); Little's law: req/s = inflight / seconds per request;
    - `cpu`: this process's CPU seconds per wall second over the whole run (1.0: one core, all one loop can use);
    - `busy`: the window's share the loop thread spent running callbacks rather than waiting in `select`;
    - `gap`: mean time from a reply read to the same task's next request (the client's work between the calls
      of one item, plus any wait for the busy loop);
    - `setup` / `tail`: wall time from the run's start to its first request, and from its last reply to the end
      (lease, plan, the first batch of items; the last checkpoints, commits and the closing status);
    - `commit`: time in the store's per-tick commits on the loop thread (`Store.flush_writes`), per request.
    It wraps the provider's `_chat`, the loop's selector and `flush_writes` for the run (a few µs per request)."""

    def __init__(self):
        self.inflight, self.area, self.last = 0, 0.0, None
        self.first = self.end = None
        self.gaps: list[float] = []
        self.task_done: dict = {}
        self.selects: list[tuple[float, float]] = []
        self.commit_s, self.requests = 0.0, 0

    def _mark(self, delta: int, now: float) -> None:
        if self.last is not None:
            self.area += self.inflight * (now - self.last)
        self.last, self.inflight = now, self.inflight + delta

    def _watch(self, loop) -> None:
        selector, selects = loop._selector, self.selects
        select = selector.select

        def timed(timeout=None):
            t = time.perf_counter()
            try:
                return select(timeout)
            finally:
                selects.append((t, time.perf_counter()))

        selector.select = timed

    @contextlib.contextmanager
    def patched(self):
        from skillweave.providers.core import OpenAIProvider
        from skillweave.store import Store

        probe, chat, flush = self, OpenAIProvider._chat, Store.flush_writes

        async def _chat(provider, request):
            task, now = asyncio.current_task(), time.perf_counter()
            if probe.first is None:
                probe.first = now
                probe._watch(asyncio.get_running_loop())
            done = probe.task_done.pop(task, None)
            if done is not None:
                probe.gaps.append(now - done)
            probe._mark(+1, now)
            try:
                return await chat(provider, request)
            finally:
                now = time.perf_counter()
                probe._mark(-1, now)
                probe.end = probe.task_done[task] = now
                probe.requests += 1

        def flush_writes(store):
            t = time.perf_counter()
            try:
                return flush(store)
            finally:
                probe.commit_s += time.perf_counter() - t

        OpenAIProvider._chat, Store.flush_writes = _chat, flush_writes
        try:
            yield self
        finally:
            OpenAIProvider._chat, Store.flush_writes = chat, flush

    def report(self, start: float, stop: float, cpu_s: float) -> dict:
        window = max(self.end - self.first, 1e-9)
        waiting = sum(max(0.0, min(b, self.end) - max(a, self.first)) for a, b in self.selects)
        return {"inflight": self.area / window, "cpu": cpu_s / (stop - start),
                "busy": 1 - waiting / window, "gap_ms": 1000 * statistics.fmean(self.gaps) if self.gaps else 0.0,
                "setup_s": self.first - start, "window_s": window, "tail_s": stop - self.end,
                "commit_ms": 1000 * self.commit_s / max(self.requests, 1)}


CPU_MS: dict[str, float] = {}  # this process's CPU ms per request of the last measured pipeline run, per model


def pipeline(concurrency: int, items: int, db: str, model: str = "openai:mock",
             probe: bool = True) -> tuple[float, float, int]:
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline
    from skillweave.store import Store

    store = Store(db)
    config = {
        "k": [2], "n": items, "rounds": 1, "seed": 10, "model": model, "judge": model,
        "grading_samples": 3, "concurrency": concurrency, "temperature": 0.7, "judge_temperature": 0.7,
        "max_tokens": 512, "student_template": "skillmix/student", "judge_template": "skillmix/judge",
        "skills_catalog": store.save_catalog("b", "skills", [s.as_dict() for s in bundled_skills()]),
        "topics_catalog": store.save_catalog("b", "topics", [{"name": t} for t in bundled_topics()]),
    }
    run_id = store.create_run("skillmix", config)
    gc_cpu = [0.0, 0.0]  # CPU seconds spent in the garbage collector during the run, start of the current one

    def gc_timer(phase, _info):
        if phase == "start":
            gc_cpu[1] = time.process_time()
        else:
            gc_cpu[0] += time.process_time() - gc_cpu[1]

    gc.callbacks.append(gc_timer)
    probe_on, probe = probe and model.startswith("openai:"), Probe()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with probe.patched() if probe_on else contextlib.nullcontext():
            summary = run_pipeline(get_pipeline("skillmix"), store, run_id, concurrency=concurrency, progress=False)
    finally:
        gc.callbacks.remove(gc_timer)
    elapsed = time.perf_counter() - start
    pipeline.cpu_s = time.process_time() - cpu_start
    pipeline.probe = probe.report(start, start + elapsed, pipeline.cpu_s) if probe.first is not None else None
    pipeline.gc_s = gc_cpu[0]
    calls = store.db["llm_calls"].count_where("error is null")
    CPU_MS[model] = (time.process_time() - cpu_start) * 1000 / max(calls, 1)
    if summary.failed:
        errors = [r["error"] for r in store.db.query("select distinct error from llm_calls where error is not null")]
        print(f"{summary.failed} items failed: {errors[:3]}", file=sys.stderr)
    return items / elapsed, calls / elapsed, calls


PROBE_LINE = ("in flight {inflight:.0f}, CPU/wall {cpu:.2f}, loop busy {busy:.2f}, reply->next request {gap_ms:.1f} ms, "
              "setup {setup_s:.2f} s + requests {window_s:.2f} s + tail {tail_s:.2f} s, commits {commit_ms:.3f} ms/request")


def executor_rounds(args, tmp: str, executors: list[str], bodies: list[dict]) -> dict[str, list[tuple]]:
    """Each executor's pipeline run `--repeat` times, alternated, each round bracketed by two runs of the bare aiohttp
    three-step loop, one right before the pipeline runs (replaying the previous round's request bodies, `bodies` at
    first) and one right after (this round's): the round's ratio is over their mean requests/s, so a machine that
    gets busier or quieter during the round moves both sides alike. Per executor: (CPU ms per request, req/s,
    pipeline / 3-step, 3-step CPU ms per request)."""
    rows: dict[str, list[tuple]] = {name: [] for name in executors}
    for r in range(args.repeat):
        order = executors if r % 2 == 0 else list(reversed(executors))
        before = asyncio.run(bare_aiohttp_three_steps(args.concurrency, bodies))
        done = {}
        for name in order:
            os.environ["SKILLWEAVE_EXECUTOR"] = name
            db = os.path.join(tmp, f"round{r}-{name}.db")
            _, rps, calls = pipeline(args.concurrency, args.items, db, probe=not args.no_probe)
            done[name] = (1000 * pipeline.cpu_s / calls, rps, db, 1000 * pipeline.gc_s / calls, pipeline.probe)
        bodies = recorded_requests(db)
        after = asyncio.run(bare_aiohttp_three_steps(args.concurrency, bodies))
        three_rps, three_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        for name in order:
            cpu, rps, _, gc_ms, probe = done[name]
            rows[name].append((cpu, rps, rps / three_rps, three_cpu))
            print(f"round {r} {name:9s} {cpu:6.2f} CPU ms/request ({gc_ms:.2f} in GC) {rps:8.1f} req/s   "
                  f"pipeline / 3-step {rps / three_rps:5.2f}   (3-step before/after {before[0]:.0f}/{after[0]:.0f} "
                  f"req/s, {three_cpu:.2f} CPU ms/request)", flush=True)
            if probe:
                print("    " + PROBE_LINE.format(**probe), flush=True)
    return rows


def spread(values: list[float], worst: str) -> str:
    """'median M (worst W, range lo-hi)': `worst` is "min" or "max", whichever end is the bad one."""
    w = min(values) if worst == "min" else max(values)
    return f"median {statistics.median(values):.2f} (worst {w:.2f}, range {min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="Mock server latency per request (s).")
    parser.add_argument("--items", type=int, default=256, help="Skill-Mix combinations (3 requests each).")
    parser.add_argument("--named", action="store_true",
                        help="Also run the pipeline through a named model of a models file (one base URL).")
    parser.add_argument("--executor", choices=["direct", "langgraph", "both"], default="both",
                        help="How threads run (SKILLWEAVE_EXECUTOR): the direct executor, LangGraph's Pregel loop, "
                             "or both alternated in this run (default), compared with the bare 3-step loop.")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Rounds of the executor comparison (median and worst round printed; e.g. 7).")
    parser.add_argument("--no-probe", action="store_true",
                        help="Leave out the per-round diagnostics (Probe: a few µs of CPU per request, counted in "
                             "the pipeline's CPU).")
    parser.add_argument("--no-sdk", action="store_true", help="Skip the bare SDK and bare provider loops.")
    args = parser.parse_args()
    executors = ["langgraph", "direct"] if args.executor == "both" else [args.executor]

    proc, port = run_in_process(args.latency)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "mock"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in executors:  # imports, template compilation
                os.environ["SKILLWEAVE_EXECUTOR"] = name
                pipeline(args.concurrency, 8, os.path.join(tmp, f"warmup-{name}.db"))
            warm = recorded_requests(os.path.join(tmp, f"warmup-{executors[-1]}.db"))
            bodies = [warm[i % len(warm)] for i in range(CALLS_PER_ITEM * args.items)]  # a round's worth, cycled
            rows = executor_rounds(args, tmp, executors, bodies)
            os.environ["SKILLWEAVE_EXECUTOR"] = executors[-1]
            db = os.path.join(tmp, "bench.db")
            items_ps, pipe_rps, calls = pipeline(args.concurrency, args.items, db, probe=not args.no_probe)
            requests = recorded_requests(db)
            named_rps = None
            if args.named:  # the same run through a named model of a models file (providers/fleet.py)
                models = os.path.join(tmp, "models.yaml")
                with open(models, "w") as f:
                    f.write(f"models:\n  mock-named:\n    kind: openai\n    model: mock\n"
                            f"    base_urls: [{os.environ['OPENAI_BASE_URL']}]\n")
                os.environ["SKILLWEAVE_MODELS"] = models
                _, named_rps, _ = pipeline(args.concurrency, args.items, os.path.join(tmp, "named.db"), "mock-named")
        if not args.no_sdk:
            asyncio.run(bare_loop(args.concurrency, requests[: args.concurrency]))  # warm the SDK path too
            bare_rps = asyncio.run(bare_loop(args.concurrency, requests))
            asyncio.run(bare_provider_loop(args.concurrency, requests[: args.concurrency]))
            provider_rps = asyncio.run(bare_provider_loop(args.concurrency, requests))
        three_rps, three_cpu_ms = asyncio.run(bare_aiohttp_three_steps(args.concurrency, requests))
    finally:
        proc.terminate()
    ideal_items = args.concurrency / (CALLS_PER_ITEM * args.latency)
    print(f"concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms, {args.items} items, {calls} requests, "
          f"executor {executors[-1]}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    import skillweave

    print(f"skillweave imported from {os.path.dirname(skillweave.__file__)}")
    print(f"ideal items/s            {ideal_items:8.1f}")
    print(f"pipeline items/s         {items_ps:8.1f}   ({items_ps / ideal_items:.0%} of ideal)")
    print(f"pipeline requests/s      {pipe_rps:8.1f}")
    if not args.no_sdk:
        print(f"bare SDK loop requests/s {bare_rps:8.1f}")
        print(f"bare provider requests/s {provider_rps:8.1f}   (skillweave's openai: provider alone, aiohttp)")
        print(f"pipeline / bare SDK loop {pipe_rps / bare_rps:8.2f}   (goal >= 0.90)")
        print(f"pipeline / bare provider {pipe_rps / provider_rps:8.2f}   (the pipeline's own overhead)")
    print(f"pipeline CPU per request {CPU_MS['openai:mock']:8.2f} ms (this process: graph, store and HTTP client)")
    if named_rps is not None:
        print(f"named model requests/s   {named_rps:8.1f}   (the same run through a models-file name)")
        if not args.no_sdk:
            print(f"named / bare SDK loop    {named_rps / bare_rps:8.2f}")
        print(f"named CPU per request    {CPU_MS['mock-named']:8.2f} ms")
    pipe_cpu_ms = 1000 * pipeline.cpu_s / calls
    print(f"bare aiohttp 3-step req/s {three_rps:7.1f}   ({three_cpu_ms:.2f} client CPU ms per request)")
    print(f"pipeline CPU ms/request  {pipe_cpu_ms:8.2f}   (goal <= 1.0)")
    print(f"pipeline / bare aiohttp 3-step {pipe_rps / three_rps:6.2f}   (goal >= 0.5 at 0.05 s latency, concurrency 256)")
    print(f"executors over {args.repeat} round(s), each round's ratio against its own 3-step loop:")
    for name, values in rows.items():
        cpu, rps, ratio, three = ([v[i] for v in values] for i in range(4))
        print(f"  {name:9s} CPU ms/request {spread(cpu, 'max')}; req/s median {statistics.median(rps):.1f}")
        print(f"  {name:9s} pipeline / 3-step {spread(ratio, 'min')}; rounds below 0.5: "
              f"{sum(x < 0.5 for x in ratio)} of {len(ratio)}; 3-step CPU ms/request {spread(three, 'max')}")
    if len(rows) == 2:
        lg, dr = (statistics.median(v[0] for v in rows[n]) for n in ("langgraph", "direct"))
        print(f"  direct / langgraph CPU per request {dr / lg:.2f}")


if __name__ == "__main__":
    main()
