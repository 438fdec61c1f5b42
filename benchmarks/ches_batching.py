"""CHES throughput: batched, padded scoring (one forward per sequence, decoder states only) vs the per-example loop.

Prints pairs/s for (1) the per-example reference loop (full model, output_hidden_states, one pair side at a time),
(2) the batched path with batch size 1 (isolates skipping the vocabulary projection), (3) the batched path with
--batch-size, and the ratios, all measured in this one run. Also checks that the two paths agree.

    .venv/bin/python benchmarks/ches_batching.py                   # tiny random model (no download)
    .venv/bin/python benchmarks/ches_batching.py --model local     # embedded SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from skillweave.trainers import ches
from skillweave.trainers.data import PreferencePair

WORDS = "the a one two three four five six seven eight nine ten cat dog sun moon red blue green run jump eat".split()


def synthetic_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)
    sentence = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [PreferencePair(sentence(rng.randint(4, 16)), sentence(rng.randint(8, 48)), sentence(rng.randint(8, 48)),
                           f"pair-{i}") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="'tiny' (random-init, no download), 'local', or a HF folder")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="sequences per batched forward (default: `ches score` / `train dpo` default)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default, as the CLI runs); 1 suits a machine loaded by "
                             "other work")
    parser.add_argument("--repeat", type=int, default=3, help="alternating repetitions; the best time is kept")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "tiny":
        from skillweave.trainers.models import tiny_model_and_tokenizer
        from skillweave.trainers.templates import template_words

        model, tokenizer = tiny_model_and_tokenizer([*template_words(), *WORDS], hidden_size=64)
    else:
        from skillweave.trainers.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.model)
    pairs = synthetic_pairs(args.pairs)
    chosen, rejected, kept = ches.encode_pairs(tokenizer, pairs)
    sequences = chosen + rejected
    n = len(kept)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    mean_len = sum(len(s) for s, _ in sequences) / len(sequences)

    ches.hidden_sums(model, sequences[:4], 2, pad)  # warm-up
    # Best of --repeat alternating runs: the shared machine's load changes by the second.
    loop_s = b1_s = batch_s = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        looped, _ = ches.hidden_sums_loop(model, sequences)
        loop_s = min(loop_s, time.perf_counter() - start)
        start = time.perf_counter()
        ches.hidden_sums(model, sequences, 1, pad)
        b1_s = min(b1_s, time.perf_counter() - start)
        start = time.perf_counter()
        batched, _, _ = ches.hidden_sums(model, sequences, args.batch_size, pad)
        batch_s = min(batch_s, time.perf_counter() - start)
    rel = float((batched - looped).norm() / looped.norm())

    print(f"model={args.model} pairs={n} mean_seq_tokens={mean_len:.1f} threads={torch.get_num_threads()} "
          f"batch={args.batch_size} (best of {args.repeat})")
    print(f"per-example loop      : {n / loop_s:8.2f} pairs/s ({loop_s:.2f} s)")
    print(f"batched, batch size 1 : {n / b1_s:8.2f} pairs/s ({b1_s:.2f} s)  x{loop_s / b1_s:.2f} vs loop")
    print(f"batched, batch size {args.batch_size:<2}: {n / batch_s:8.2f} pairs/s ({batch_s:.2f} s)  x{loop_s / batch_s:.2f} vs loop")
    print(f"max relative difference of S(y), batched vs loop: {rel:.2e}")


if __name__ == "__main__":
    main()
