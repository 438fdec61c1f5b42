"""Per-call cost of looking up a model's price: the cached `price_of` against a fresh lookup each call.

Every stored model call asks for its model's price (agents/llm.py). A fresh lookup stats and reads the models
file's caches and scans the built-in table; `price_of` caches the answer per spec while the models file is
unchanged (one stat per call). Prints microseconds per lookup and the ratio, measured in this run.

    python benchmarks/price_lookup.py
"""

from __future__ import annotations

import os
import tempfile
import timeit

MODELS = "models:\n  cheap: {kind: fake, model: default, price_input: 1, price_output: 2}\n" \
         "prices:\n  fake: {input: 1, output: 2}\n"


def main(number: int = 5000) -> None:
    from skillweave.providers.prices import _lookup_price, price_of

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "models.yaml")
        with open(path, "w") as f:
            f.write(MODELS)
        os.environ["SKILLWEAVE_MODELS"] = path
        for spec in ("openai:gpt-4o-mini", "cheap", "fake"):
            price_of(spec)
            cached = timeit.timeit(lambda s=spec: price_of(s), number=number) / number
            fresh = timeit.timeit(lambda s=spec: _lookup_price(s), number=number) / number
            print(f"{spec:20} cached {cached * 1e6:6.1f} us  fresh {fresh * 1e6:6.1f} us  ratio {fresh / cached:4.1f}x")


if __name__ == "__main__":
    main()
