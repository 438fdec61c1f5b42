"""Unlearning vs retraining time for anchor-word topic models at m = 1e4, 1e5, 1e6 documents (experiment T3).

Planted separable model (n words, r topics, anchor probability 0.05, Dirichlet(0.1) prior), documents of
`--length` words. For each m: learn once, then delete a fixed random forget set of `--forget` documents and
time (a) Ubase as released by default (downdate the statistics and document frequencies, re-search the
anchors on them, re-solve, rebuild A and R, measure the sensitivity, calibrate and add noise), (b) the same
with `keep_anchors=True` (no anchor search), and (c) retraining from scratch on the retained documents (count
matrix from the word-id arrays, co-occurrence, anchors, RecoverL2). Prints wall and CPU times (best of `--repeats`;
CPU time = this process's, all threads, which a busy shared machine inflates far less than wall time), the
ratios, the growth of each from the smallest m, the noiseless unlearned-vs-retrained distance and whether the
anchors agree. Ratios are measured in this run; nothing is asserted.

    .venv/bin/python benchmarks/unlearning_cost.py                 # L = 2 (the paper's setting)
    .venv/bin/python benchmarks/unlearning_cost.py --length 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skillweave.trainers.unlearning.topic_model import TopicModelConfig, fit, planted_topics, sample_documents
from skillweave.trainers.unlearning.unlearn import UnlearnConfig, unlearn_base


def best_time(fn, repeats: int):
    """(best wall time, best CPU time of this process, last result) over `repeats` calls."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="Comma-separated document counts m.")
    parser.add_argument("--words", type=int, default=200, help="Vocabulary size n.")
    parser.add_argument("--topics", type=int, default=5, help="Topics r.")
    parser.add_argument("--length", type=int, default=2, help="Words per document L.")
    parser.add_argument("--forget", type=int, default=100, help="Documents deleted (fixed across m).")
    parser.add_argument("--repeats", type=int, default=7, help="Unlearning timing repeats (best of); retraining: 2.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    A, _ = planted_topics(args.words, args.topics, anchor_prob=0.05, seed=args.seed)
    rows = []
    for m in [int(s) for s in args.sizes.split(",")]:
        docs, _ = sample_documents(A, m, length=args.length, seed=args.seed + 1)
        config = TopicModelConfig(n_topics=args.topics, anchor_min_docs=max(1, m // 200))
        model = fit(docs, config, n_words=args.words)
        forget = np.random.default_rng(args.seed).choice(m, args.forget, replace=False)
        keep = np.setdiff1d(np.arange(m), forget)
        forget_docs, kept_docs = docs[forget], docs[keep]
        released = UnlearnConfig(utility_threshold=1e9)  # time the whole request; capacity is not the point here
        fixed = UnlearnConfig(utility_threshold=1e9, keep_anchors=True)
        t_u, c_u, result = best_time(lambda model=model, f=forget_docs, c=released: unlearn_base(model, f, c),
                                     args.repeats)
        t_k, c_k, _ = best_time(lambda model=model, f=forget_docs, c=fixed: unlearn_base(model, f, c), args.repeats)
        t_r, c_r, retrained = best_time(lambda k=kept_docs, c=config: fit(k, c, n_words=args.words),
                                        min(2, args.repeats))
        noiseless = unlearn_base(model, forget_docs, UnlearnConfig(noiseless=True)).model
        agree = bool(np.array_equal(retrained.anchors, noiseless.anchors))
        rows.append((m, c_u, c_r, c_k))
        print(f"m={m:>9,d}  wall: unlearn {t_u * 1e3:7.2f} ms (anchors kept {t_k * 1e3:6.2f}) retrain "
              f"{t_r * 1e3:8.1f} ms ratio {t_r / t_u:7.1f}x | CPU: unlearn {c_u * 1e3:7.2f} ms (anchors kept "
              f"{c_k * 1e3:6.2f}) retrain {c_r * 1e3:8.1f} ms ratio {c_r / c_u:7.1f}x | |A_U - A_retrain|_1 "
              f"(noiseless) {np.abs(noiseless.A - retrained.A).sum():.1e}, anchors agree {agree}, changed by the "
              f"deletion {result.stats['anchors_changed']}", flush=True)
    m0, u0, r0, k0 = rows[0]
    print(f"\nn={args.words} r={args.topics} L={args.length} m_f={args.forget}  (CPU time growth)")
    for m, c_u, c_r, c_k in rows[1:]:
        print(f"m x{m / m0:g}: unlearning x{c_u / u0:.2f} (anchors kept x{c_k / k0:.2f}), retraining x{c_r / r0:.2f}")


if __name__ == "__main__":
    main()
