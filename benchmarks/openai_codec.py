"""The `openai:` client's JSON codec: the standard library against orjson (providers/core.py), on real bodies.

Runs a small Skill-Mix pipeline through the `openai:` provider against `benchmarks/mock_openai.py`, takes the
request bodies it sent (as `pipeline_throughput.recorded_requests` reads them back, plus the model), and times
encoding them with `json.dumps(...).encode()` and with the client's `_dumps` (orjson where installed), and
decoding a three-sample judge reply (the mock server's) with `json.loads` and the client's `_loads`; prints µs
per body or reply (best of `--repeat`) and the ratios.

    python benchmarks/openai_codec.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pipeline_throughput as pt  # noqa: E402
from mock_openai import JUDGE, run_in_process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16, help="Skill-Mix items whose request bodies are timed.")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from skillweave.providers.core import _dumps, _loads, orjson

    proc, port = run_in_process(0.01)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "mock"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(tmp, "codec.db")
            pt.pipeline(16, args.items, db)
            bodies = [{"model": "mock", **body} for body in pt.recorded_requests(db)]
    finally:
        proc.terminate()
    reply = json.dumps({"choices": [{"index": i, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": JUDGE}} for i in range(3)],
                        "usage": {"prompt_tokens": 250, "completion_tokens": 60}}).encode()

    def best(func, number: int) -> float:
        return min(timeit.repeat(func, number=number, repeat=args.repeat)) / number * 1e6

    n = len(bodies)
    encode_json = best(lambda: [json.dumps(b).encode() for b in bodies], 20) / n
    encode_fast = best(lambda: [_dumps(b) for b in bodies], 20) / n
    decode_json = best(lambda: json.loads(reply), 2000)
    decode_fast = best(lambda: _loads(reply), 2000)
    print(f"{n} request bodies, {sum(len(json.dumps(b)) for b in bodies) // n} bytes on average; "
          f"orjson {'installed' if orjson is not None else 'NOT installed (the client uses json)'}")
    print(f"encode a body    json {encode_json:6.1f} us   client {encode_fast:6.1f} us   ratio {encode_fast / encode_json:.2f}")
    print(f"decode a reply   json {decode_json:6.1f} us   client {decode_fast:6.1f} us   ratio {decode_fast / decode_json:.2f}")


if __name__ == "__main__":
    main()
