"""Benchmark: where the batched LESS feature step spends its time, versions compared inside one process.

Interleaves, on the same model, examples, moments and projector (best and median of --repeat rounds each):
- the full batched feature step (`build_features`) with the projection buffer off (budget 0: every feature batch
  projected alone, as right after the device work) and with the default buffer (`PROJECTION_BUFFER_BYTES`);
- the projection alone, per feature batch vs one product per chunk;
- the batched gradient step with the lean chunked log-probabilities (`devices.token_logps`) vs the earlier full
  fp32 cross-entropy, to see whether the loss change costs anything;
- the batched gradient step with every LoRA weight hooked (`BatchedGradients(merge_bytes=0)`) vs LoRA layers run
  merged (the default).
Prints rates and ratios measured in this run; nothing is asserted. Results go in docs/results/less.md.

    .venv/bin/python benchmarks/less_feature_step.py --threads 1 --repeat 5
    .venv/bin/python benchmarks/less_feature_step.py --threads 1 --repeat 7 --clock cpu   # a loaded machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import LessConfig, add_lora, build_features, load_base

sys.path.insert(0, str(Path(__file__).parent))
from less_features import synthetic_rows  # noqa: E402


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The per-example loss before the lean log-probabilities: a full fp32 cross-entropy over the vocabulary."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=lf.IGNORE,
                                               reduction="none")
    mask = (labels != lf.IGNORE).float()
    return (losses * mask).sum(1) / mask.sum(1).clamp(min=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, local (embedded SmolLM2-135M) or a model folder")
    parser.add_argument("--n", type=int, default=256, help="examples")
    parser.add_argument("--dim", type=int, default=1024, help="projection dimension")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, much less disturbed "
                             "by other processes on a loaded machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = synthetic_rows(args.n)
    config = LessConfig(model=args.model, lora_r=8, lora_alpha=32, max_length=args.max_length, chunk_examples=160)
    model, tokenizer = load_base(args.model, [r["prompt"] + " " + r["completion"] for r in rows])
    model = add_lora(model, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    model.eval()
    encoded = [lf.encode_example(tokenizer, lf.to_messages(r), args.max_length) for r in rows]
    names = [n for n, _ in lf.trainable_parameters(model)]
    moments = lf.AdamMoments.from_named(
        {n: {"exp_avg": torch.randn_like(p) * 1e-3, "exp_avg_sq": torch.rand_like(p) * 1e-6, "step": 10}
         for n, p in model.named_parameters() if n in names}, names)
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    projector = lf.RademacherProjector(n_params, args.dim, seed=0)
    batches = lf.length_batches([len(e["input_ids"]) for e in encoded], config.feature_batch_size,
                                config.feature_batch_tokens)
    pad = tokenizer.pad_token_id
    print(f"model={args.model} P={n_params:,} d={args.dim} examples={len(encoded)} "
          f"batches={len(batches)} threads={torch.get_num_threads()}")
    grads = torch.randn(config.chunk_examples, n_params)
    projector.project(grads[:1])  # a cached Π is generated before timing
    default_budget = lf.PROJECTION_BUFFER_BYTES

    def full_step(budget: int, tmp: Path, tag: str):
        lf.PROJECTION_BUFFER_BYTES = budget
        try:
            return build_features(model, pad, encoded, tmp / tag, kind="adam", moments=moments, projector=projector,
                                  config=config)
        finally:
            lf.PROJECTION_BUFFER_BYTES = default_budget

    def gradients(loss_fn, merge_bytes=None):
        real = lf.per_example_loss
        lf.per_example_loss = loss_fn
        try:
            with lf.BatchedGradients(model, merge_bytes=merge_bytes) as batched:
                for index in batches:
                    batched([encoded[i] for i in index], pad)
        finally:
            lf.per_example_loss = real

    def project(width: int):
        for start in range(0, grads.shape[0], width):
            projector.project(grads[start : start + width])

    cases = {
        "full step, per-batch projection (budget 0)": lambda r, tmp: full_step(0, tmp, f"off{r}"),
        "full step, projection buffer (default)": lambda r, tmp: full_step(default_budget, tmp, f"on{r}"),
        f"projection of {config.chunk_examples} rows, 32 at a time": lambda r, tmp: project(32),
        f"projection of {config.chunk_examples} rows, at once": lambda r, tmp: project(config.chunk_examples),
        "gradients, full fp32 cross-entropy": lambda r, tmp: gradients(cross_entropy_loss),
        "gradients, chunked token_logps (current)": lambda r, tmp: gradients(lf.per_example_loss),
        "gradients, every LoRA weight hooked": lambda r, tmp: gradients(lf.per_example_loss, merge_bytes=0),
        "gradients, LoRA layers merged (current)": lambda r, tmp: gradients(lf.per_example_loss),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        full_step(default_budget, Path(tmp), "warm")
        for r in range(args.repeat):
            for name, fn in cases.items():
                start = clock()
                fn(r, Path(tmp))
                times[name].append(clock() - start)
        off, on = (full_step(b, Path(tmp), f"cmp{b}") for b in (0, default_budget))
    for name, ts in times.items():
        print(f"{name:48s} best {min(ts) * 1e3:8.1f} ms   median {statistics.median(ts) * 1e3:8.1f} ms")
    keys = list(cases)
    for slow, fast in zip(keys[::2], keys[1::2], strict=True):
        print(f"{fast} vs {slow}: {min(times[slow]) / min(times[fast]):.2f}x best, "
              f"{statistics.median(times[slow]) / statistics.median(times[fast]):.2f}x median")
    rel = ((on - off).norm(dim=1) / off.norm(dim=1)).max().item()
    print(f"features, buffer vs per-batch projection: max relative difference {rel:.2e}")


if __name__ == "__main__":
    main()
