"""ConceptMix sampler and renderer, measured in one run: object-count distribution against 1 + Binomial(k, p),
non-object category frequencies against uniform, constraint violations, and draw / render throughput.

    .venv/bin/python benchmarks/conceptmix_sampler.py [--draws 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter

from skillweave.catalog.conceptmix import complete_config_by_rule, load_concept_catalog, sample_concepts
from skillweave.providers.images import render_configuration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20000, help="draws per k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renders", type=int, default=100)
    args = parser.parse_args()
    catalog = load_concept_catalog()
    rng = random.Random(args.seed)
    p = 0.25
    print(f"draws per k: {args.draws}, seed {args.seed}")
    print("k  P(1 object) measured/expected  mean extra objects measured/expected  violations  repeats  draws/s")
    for k in range(1, 8):
        start = time.perf_counter()
        samples = [sample_concepts(catalog, k, rng) for _ in range(args.draws)]
        rate = args.draws / (time.perf_counter() - start)
        objects = Counter(s.categories.count("object") for s in samples)
        violations = repeats = 0
        for s in samples:
            cats = Counter(c for c in s.categories if c != "object")
            n_obj = s.categories.count("object")
            violations += any(v > n_obj for v in cats.values()) or cats["style"] > 1
            repeats += any(v > 1 for v in cats.values())
        one = objects[1] / args.draws
        mean_extra = sum((n - 1) * m for n, m in objects.items()) / args.draws
        print(f"{k}  {one:.4f} / {(1 - p) ** k:.4f}                 {mean_extra:.4f} / {k * p:.4f}"
              f"                          {violations}           {repeats / args.draws:.3f}   {rate:,.0f}")
    # k = 1: the single non-object concept should be uniform over the 7 categories
    drawn = Counter(c for s in (sample_concepts(catalog, 1, rng) for _ in range(args.draws))
                    for c in s.categories[1:] if c != "object")
    total = sum(drawn.values())
    chi2 = sum((n - total / 7) ** 2 / (total / 7) for n in drawn.values())
    print("k=1 category shares: " + ", ".join(f"{c} {n / total:.3f}" for c, n in sorted(drawn.items())))
    print(f"k=1 chi-square vs uniform (6 dof, 5% critical 12.59): {chi2:.2f}; max |share - 1/7| = "
          f"{max(abs(n / total - 1 / 7) for n in drawn.values()):.4f} (sd {math.sqrt((1 / 7) * (6 / 7) / total):.4f})")
    configs = [complete_config_by_rule(s.config, s.concepts, rng).copy() for s in
               (sample_concepts(catalog, rng.randint(1, 7), rng) for _ in range(args.renders))]
    start = time.perf_counter()
    sizes = [len(render_configuration(c)) for c in configs]
    elapsed = time.perf_counter() - start
    print(f"render: {args.renders / elapsed:.1f} images/s (512x512 PNG, mean {sum(sizes) / len(sizes) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
