"""CPU cost per request of the provider's retry loop: skillweave's own loop against the same policy on tenacity.

Both variants run the same `openai:` provider (`Provider.chat` around `OpenAIProvider._chat`) with the same
RetryPolicy; only the loop differs. Measured in one run, alternating the variants:
  - CPU ms per request (this process's CPU time / requests) against benchmarks/mock_openai.py on 127.0.0.1,
    `--concurrency` workers, no latency, no faults (the fast path every successful call takes);
  - CPU µs per call of the loop alone, around a `_chat` that returns at once (no HTTP).
With `--baseline FILE` (an older providers/core.py, e.g. from `git show REV:providers/core.py`), its
`openai:` provider is measured in the same run as a third variant, to see what the fault checks cost.

    python benchmarks/retry_policy.py --requests 3000 --concurrency 64 --repeats 3
    git show c32c4dd:providers/core.py > /tmp/providers_before.py
    python benchmarks/retry_policy.py --repeats 8 --baseline /tmp/providers_before.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mock_openai import run_in_process  # noqa: E402


def tenacity_chat_class(base):
    """`base` with `chat` rewritten on tenacity.AsyncRetrying, same policy (attempts, waits, timeout)."""
    import tenacity

    from skillweave.errors import ModelCallError
    from skillweave.providers.core import RetryableError

    class TenacityChat(base):
        async def chat(self, request):
            policy = self.retry

            def wait(state):
                return policy.delay(state.attempt_number, getattr(state.outcome.exception(), "retry_after", None))

            retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(policy.max_attempts), wait=wait,
                                              retry=tenacity.retry_if_exception_type((RetryableError, TimeoutError)),
                                              reraise=True)
            try:
                async for attempt in retrying:
                    with attempt:
                        async with self._semaphore(), asyncio.timeout(policy.timeout):
                            result = await self._chat(request)
                        if not result.texts or not all(isinstance(t, str) and t.strip() for t in result.texts):
                            raise RetryableError("reply without text")
            except (RetryableError, TimeoutError) as exc:
                raise ModelCallError(f"{self.spec}: gave up: {exc}", retryable=True) from exc
            return result, attempt.retry_state.attempt_number

    return TenacityChat


async def http_loop(provider, requests: int, concurrency: int) -> float:
    """CPU seconds per request through the provider against the mock server."""
    from skillweave.providers.core import ChatRequest

    left = [requests]
    request = ChatRequest(messages=[{"role": "user", "content": "Write one sentence about sewing."}])

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            await provider.chat(request)

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - start
    await provider.aclose()
    return cpu / requests


async def loop_only(provider, calls: int) -> float:
    from skillweave.providers.core import ChatRequest

    request = ChatRequest(messages=[{"role": "user", "content": "x"}])
    start = time.process_time()
    for _ in range(calls):
        await provider.chat(request)
    return (time.process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-calls", type=int, default=20000)
    parser.add_argument("--baseline", default=None, help="An older providers/core.py to measure alongside.")
    args = parser.parse_args()

    from skillweave.providers.core import ChatResult, FakeProvider, OpenAIProvider

    proc, port = run_in_process(0.0)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "mock"
    variants = {"own loop": OpenAIProvider, "tenacity": tenacity_chat_class(OpenAIProvider)}
    if args.baseline:
        import importlib.util

        spec = importlib.util.spec_from_file_location("providers_baseline", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = baseline
        spec.loader.exec_module(baseline)
        variants["baseline"] = baseline.OpenAIProvider
    http = {name: [] for name in variants}
    try:
        for cls in variants.values():  # warm-up
            asyncio.run(http_loop(cls("mock", max_concurrency=args.concurrency), 200, args.concurrency))
        for _ in range(args.repeats):
            for name, cls in variants.items():
                http[name].append(asyncio.run(http_loop(cls("mock", max_concurrency=args.concurrency),
                                                        args.requests, args.concurrency)))
    finally:
        proc.terminate()

    class Instant(FakeProvider):
        async def _chat(self, request):
            return ChatResult(texts=["ok"])

    loops = {name: [] for name in ("own loop", "tenacity")}
    for _ in range(args.repeats):
        for name, cls in (("own loop", Instant), ("tenacity", tenacity_chat_class(Instant))):
            loops[name].append(asyncio.run(loop_only(cls("x"), args.loop_calls)))

    print(f"{args.requests} requests x {args.repeats} repeats, concurrency {args.concurrency}; "
          f"loop alone: {args.loop_calls} calls x {args.repeats}")
    for name in variants:
        print(f"{name:9} CPU per HTTP request {min(http[name]) * 1000:6.3f} ms (runs: "
              f"{', '.join(f'{v * 1000:.3f}' for v in http[name])})"
              + (f"   loop alone {min(loops[name]) * 1e6:6.1f} µs" if name in loops else ""))
    if args.baseline:
        import statistics

        print(f"own loop / baseline: HTTP request CPU, best {min(http['own loop']) / min(http['baseline']):.3f}, "
              f"median {statistics.median(http['own loop']) / statistics.median(http['baseline']):.3f}")
    ratio = min(http["tenacity"]) / min(http["own loop"])
    print(f"tenacity / own loop: HTTP request CPU {ratio:.3f}, loop alone "
          f"{min(loops['tenacity']) / min(loops['own loop']):.2f}")


if __name__ == "__main__":
    main()
