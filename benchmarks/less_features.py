"""Benchmark: LESS feature extraction, batched per-example gradients vs the one-example-at-a-time loop.

Both paths run the full feature step (gradient → Adam direction → Rademacher projection → datastore chunks) on
the same examples with the same projector; the script prints examples/s for each, their ratio, and the largest
relative difference between the two feature matrices. Nothing is asserted; results go in docs/results/less.md.

    .venv/bin/python benchmarks/less_features.py                      # tiny Llama, 256 examples
    .venv/bin/python benchmarks/less_features.py --model local --n 64 --max-length 128
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import LessConfig, add_lora, build_features, load_base


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "seven", "green", "light", "north"] + \
        [str(i) for i in range(10)]
    return [{"prompt": " ".join(rng.choice(words) for _ in range(rng.randint(4, 40))),
             "completion": " ".join(rng.choice(words) for _ in range(rng.randint(2, 40)))} for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, local (embedded SmolLM2-135M) or a model folder")
    parser.add_argument("--n", type=int, default=256, help="examples")
    parser.add_argument("--batch-size", type=int, default=LessConfig.feature_batch_size,
                        help="most examples per batched pass (default: the CLI's --feature-batch-size)")
    parser.add_argument("--dim", type=int, default=1024, help="projection dimension")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--repeat", type=int, default=3, help="alternating repetitions; the best rate is kept")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default, as `skillweave select less` runs); 1 suits a "
                             "machine loaded by other work")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = synthetic_rows(args.n)
    config = LessConfig(model=args.model, lora_r=args.lora_r, lora_alpha=4 * args.lora_r, lora_targets=args.lora_targets,
                        max_length=args.max_length, feature_batch_size=args.batch_size, chunk_examples=160)
    texts = [r["prompt"] + " " + r["completion"] for r in rows]
    model, tokenizer = load_base(args.model, texts)
    model = add_lora(model, config)
    torch.manual_seed(0)
    with torch.no_grad():  # a warmed-up-like adapter: B != 0 so every LoRA gradient is non-trivial
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    model.eval()
    encoded = [lf.encode_example(tokenizer, lf.to_messages(r), args.max_length) for r in rows]
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    names = [n for n, _ in lf.trainable_parameters(model)]
    moments = lf.AdamMoments.from_named(
        {n: {"exp_avg": torch.randn_like(p) * 1e-3, "exp_avg_sq": torch.rand_like(p) * 1e-6, "step": 10}
         for n, p in model.named_parameters() if n in names}, names)
    projector = lf.RademacherProjector(n_params, args.dim, seed=0)
    tokens = sum(len(e["input_ids"]) for e in encoded)
    print(f"model={args.model} LoRA params P={n_params:,} d={args.dim} examples={len(encoded)} tokens={tokens:,} "
          f"batch={args.batch_size} torch threads={torch.get_num_threads()}")

    # Best of --repeat alternating runs: the shared machine's load changes by the second.
    features, full_rate, grad_rate = {}, {"loop": 0.0, "batched": 0.0}, {"loop": 0.0, "batched": 0.0}
    batches = lf.length_batches([len(e["input_ids"]) for e in encoded], config.feature_batch_size,
                                config.feature_batch_tokens)
    lf.example_gradients(model, encoded[:2], tokenizer.pad_token_id, "batched")  # warm up kernels
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeat):
            for method in ("loop", "batched"):
                config.gradient_method = method
                start = time.perf_counter()
                features[method] = build_features(model, tokenizer.pad_token_id, encoded,
                                                  Path(tmp) / f"{method}{repeat}", kind="adam", moments=moments,
                                                  projector=projector, config=config)
                full_rate[method] = max(full_rate[method], len(encoded) / (time.perf_counter() - start))
                # The gradient step alone (no Adam, projection or files), same examples and batches.
                start = time.perf_counter()
                if method == "batched":
                    with lf.BatchedGradients(model) as batched:
                        for index in batches:
                            batched([encoded[i] for i in index], tokenizer.pad_token_id)
                else:
                    for index in batches:
                        lf.loop_gradients(model, [encoded[i] for i in index])
                grad_rate[method] = max(grad_rate[method], len(encoded) / (time.perf_counter() - start))
    for method in ("loop", "batched"):
        print(f"{method:8s} full feature step {full_rate[method]:8.1f} examples/s   "
              f"gradients only {grad_rate[method]:8.1f} examples/s   (best of {args.repeat})")
    print(f"speedup batched/loop: full feature step {full_rate['batched'] / full_rate['loop']:.2f}x, "
          f"gradients only {grad_rate['batched'] / grad_rate['loop']:.2f}x")
    loop, batched = features["loop"], features["batched"]
    rel = ((batched - loop).norm(dim=1) / loop.norm(dim=1)).max().item()
    cos = (lf.normalize_rows(batched) * lf.normalize_rows(loop)).sum(1).min().item()
    print(f"features: max relative difference {rel:.2e}, min cosine {cos:.8f}")


if __name__ == "__main__":
    main()
