"""The HTTP side alone: skillweave's `openai:` client against the bare aiohttp three-step loop, CPU per request.

`benchmarks/pipeline_throughput.py` compares the whole pipeline with a bare aiohttp loop; this isolates the part
of the difference that is the client path: the same recorded request bodies (a Skill-Mix warm-up run's student
turns and judge call, cycled), `--concurrency` workers that each take an item and send its three requests in
sequence, against one mock server (`benchmarks/mock_openai.py`, another process), in two forms alternated round
by round in one process:

- `bare`: the issue's reference, `bare_aiohttp_three_steps` (one aiohttp session, `session.post(json=...)`,
  `response.json()`);
- `provider`: `OpenAIProvider.chat` (the bound, the timeout, retries, the request body, orjson, reply checks).

What the pipeline does around the provider (graph, store, templates, call keys, grading) is measured without HTTP
by `pipeline_overhead.py`.

Per form: client CPU ms per request (this process's CPU time over the requests sent) and requests/s, median and
range over the rounds, and the provider / bare ratios of the medians. What `provider` spends above `bare` is
what skillweave's client adds to HTTP; `bare` is the floor.

    python benchmarks/pipeline_client.py --concurrency 256 --latency 0.05 --items 512 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mock_openai import run_in_process  # noqa: E402

CALLS_PER_ITEM = 3


async def provider_three_steps(concurrency: int, requests: list[dict]) -> tuple[float, float]:
    """Like `bare_aiohttp_three_steps`, through skillweave's `OpenAIProvider.chat`: (requests/s, CPU ms/request)."""
    from skillweave.providers.core import ChatRequest, OpenAIProvider

    provider = OpenAIProvider("mock", max_concurrency=concurrency)
    items = [requests[i:i + CALLS_PER_ITEM] for i in range(0, len(requests) - CALLS_PER_ITEM + 1, CALLS_PER_ITEM)]
    queue = list(reversed(items))
    sent = 0

    async def worker():
        nonlocal sent
        while queue:
            for body in queue.pop():
                await provider.chat(ChatRequest(messages=body["messages"], temperature=body["temperature"],
                                                max_tokens=body["max_tokens"], n=body["n"]))
                sent += 1

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await provider.aclose()
    return sent / elapsed, 1000 * cpu / sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=256, help="Workers (items in flight), and the bound.")
    parser.add_argument("--latency", type=float, default=0.05, help="Mock server latency per request (s).")
    parser.add_argument("--items", type=int, default=512, help="Items of three requests per round and form.")
    parser.add_argument("--rounds", type=int, default=7, help="Rounds; each runs both forms, alternating the order.")
    args = parser.parse_args()

    import pipeline_throughput as pt

    proc, port = run_in_process(args.latency)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "mock"
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "provider": []}
    forms = {"bare": pt.bare_aiohttp_three_steps, "provider": provider_three_steps}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pt.pipeline(args.concurrency, 8, os.path.join(tmp, "warm.db"), probe=False)
            warm = pt.recorded_requests(os.path.join(tmp, "warm.db"))
        bodies = [warm[i % len(warm)] for i in range(CALLS_PER_ITEM * args.items)]
        for form in forms.values():  # warm both paths (imports, connections)
            asyncio.run(form(args.concurrency, bodies[: CALLS_PER_ITEM * args.concurrency]))
        for r in range(args.rounds):
            for name in (list(forms) if r % 2 == 0 else list(reversed(forms))):
                rps, cpu_ms = asyncio.run(forms[name](args.concurrency, bodies))
                results[name].append((rps, cpu_ms))
                print(f"round {r} {name:9s} {cpu_ms:.3f} CPU ms/request  {rps:7.1f} req/s", flush=True)
    finally:
        proc.terminate()
    print(f"concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms, {args.items} items x 3 requests, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    medians = {}
    for name, rows in results.items():
        rps, cpu = [r[0] for r in rows], [r[1] for r in rows]
        medians[name] = (statistics.median(rps), statistics.median(cpu))
        print(f"{name:9s} CPU ms/request median {medians[name][1]:.3f} (range {min(cpu):.3f}-{max(cpu):.3f}); "
              f"req/s median {medians[name][0]:.1f} (range {min(rps):.1f}-{max(rps):.1f})")
    if all(results.values()):
        (b_rps, b_cpu), (p_rps, p_cpu) = medians["bare"], medians["provider"]
        print(f"provider - bare CPU ms/request: {p_cpu - b_cpu:+.3f}; provider / bare CPU {p_cpu / b_cpu:.2f}, "
              f"req/s {p_rps / b_rps:.2f}")
        pairs = [p[1] / b[1] for b, p in zip(results["bare"], results["provider"], strict=True)]  # back to back
        print(f"provider / bare CPU per round: median {statistics.median(pairs):.2f} (range {min(pairs):.2f}-"
              f"{max(pairs):.2f}); provider lower in {sum(x < 1 for x in pairs)} of {len(pairs)} rounds")


if __name__ == "__main__":
    main()
