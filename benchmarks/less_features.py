"""Benchmark: LESS feature extraction, batched per-example gradients vs the one-example-at-a-time loop.

Both paths run the full feature step (gradient → Adam direction → Rademacher projection → datastore chunks) on
the same examples with the same projector; the script prints examples/s for each, their ratio, and the largest
relative difference between the two feature matrices. Nothing is asserted; results go in docs/results/less.md.

With `--against REV` the feature code of git revision REV (`trainers/less_features.py` and `build_features` of
`trainers/less.py`, read with `git show` and loaded as separate modules into this process) runs too, interleaved
with the current code in every repetition on the same model, examples, moments and Π, so both versions' ratios
come from one run under the same load (the default revision c32c4dd is the code before the device and
projection changes).

    .venv/bin/python benchmarks/less_features.py                      # tiny Llama, 256 examples
    .venv/bin/python benchmarks/less_features.py --against c32c4dd --repeat 5
    .venv/bin/python benchmarks/less_features.py --against c32c4dd --threads 1 --clock cpu   # a loaded machine
    .venv/bin/python benchmarks/less_features.py --model local --n 64 --max-length 128
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
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


def load_revision(rev: str, folder: Path):
    """(less_features, less) modules of git revision `rev`, loaded under private names; `less.lf` is rebound to
    that revision's less_features, so its `build_features` runs the old code throughout."""
    root = Path(__file__).resolve().parents[1]
    modules = []
    for name in ("less_features", "less"):
        source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:trainers/{name}.py"], capture_output=True,
                                text=True, check=True).stdout
        path = folder / f"{name}_{rev}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"_bench_{name}_{rev}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        modules.append(module)
    old_lf, old_less = modules
    old_less.lf = old_lf
    return old_lf, old_less


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, local (embedded SmolLM2-135M) or a model folder")
    parser.add_argument("--n", type=int, default=256, help="examples")
    parser.add_argument("--batch-size", type=int, default=LessConfig.model_fields["feature_batch_size"].default,
                        help="most examples per batched pass (default: the CLI's --feature-batch-size)")
    parser.add_argument("--dim", type=int, default=1024, help="projection dimension")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--repeat", type=int, default=3, help="alternating repetitions; the best rate is kept")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--against", metavar="REV", nargs="?", const="c32c4dd", default=None,
                        help="also run the feature code of this git revision, interleaved (default c32c4dd)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, the work done, "
                             "much less disturbed by other processes on a loaded machine)")
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

    # Best (and median) of --repeat alternating runs: the shared machine's load changes by the second.
    batches = lf.length_batches([len(e["input_ids"]) for e in encoded], config.feature_batch_size,
                                config.feature_batch_tokens)
    tmp_root = Path(tempfile.mkdtemp())
    # version -> (less_features module, build_features, moments, projector); the same tensors for every version
    versions = {"current": (lf, build_features, moments, projector)}
    if args.against:
        old_lf, old_less = load_revision(args.against, tmp_root)
        old_moments = old_lf.AdamMoments(moments.exp_avg, moments.exp_avg_sq, moments.step)
        versions[args.against] = (old_lf, old_less.build_features, old_moments,
                                  old_lf.RademacherProjector(n_params, args.dim, seed=0))
    methods = ("loop", "batched")
    full = {(v, m): [] for v in versions for m in methods}
    grad = {(v, m): [] for v in versions for m in methods}
    features = {}
    lf.example_gradients(model, encoded[:2], tokenizer.pad_token_id, "batched")  # warm up kernels
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    run = 0
    for repeat in range(args.repeat):
        order = list(versions.items())
        for version, (module, build, version_moments, version_projector) in order[::-1] if repeat % 2 else order:
            for method in methods:
                run += 1
                config.gradient_method = method
                folder = tmp_root / f"run{run}"
                folder.mkdir(parents=True)
                # fp32 chunks (datastore format 1), so the difference printed is the computation's, not fp16 storage
                (folder / "format.json").write_text('{"format": 1}')
                start = clock()
                features[version, method] = build(model, tokenizer.pad_token_id, encoded, folder,
                                                  kind="adam", moments=version_moments, projector=version_projector,
                                                  config=config)
                full[version, method].append(clock() - start)
                # The gradient step alone (no Adam, projection or files), same examples and batches.
                start = clock()
                if method == "batched":
                    with module.BatchedGradients(model) as batched:
                        for index in batches:
                            batched([encoded[i] for i in index], tokenizer.pad_token_id)
                else:
                    for index in batches:
                        module.loop_gradients(model, [encoded[i] for i in index])
                grad[version, method].append(clock() - start)
    n = len(encoded)
    for version in versions:
        print(f"-- {version} code")
        for method in methods:
            f, g = full[version, method], grad[version, method]
            print(f"{method:8s} full feature step {n / min(f):8.1f} examples/s (median {n / statistics.median(f):7.1f})"
                  f"   gradients only {n / min(g):8.1f} examples/s (median {n / statistics.median(g):7.1f})")
        print(f"speedup batched/loop: full feature step {min(full[version, 'loop']) / min(full[version, 'batched']):.2f}x"
              f" (medians {statistics.median(full[version, 'loop']) / statistics.median(full[version, 'batched']):.2f}x),"
              f" gradients only {min(grad[version, 'loop']) / min(grad[version, 'batched']):.2f}x"
              f" (medians {statistics.median(grad[version, 'loop']) / statistics.median(grad[version, 'batched']):.2f}x)"
              f"   [best of {args.repeat}, {args.clock} clock]")
        loop, batched = features[version, "loop"], features[version, "batched"]
        rel = ((batched - loop).norm(dim=1) / loop.norm(dim=1)).max().item()
        cos = (lf.normalize_rows(batched) * lf.normalize_rows(loop)).sum(1).min().item()
        print(f"features: max relative difference {rel:.2e}, min cosine {cos:.8f}")
    if args.against:
        for method in methods:
            for label, times in (("full feature step", full), ("gradients only", grad)):
                old, new = times[args.against, method], times["current", method]
                print(f"current vs {args.against}, {method} {label}: {min(old) / min(new):.2f}x best, "
                      f"{statistics.median(old) / statistics.median(new):.2f}x median (above 1: current faster)")
        ref = features[args.against, "batched"]
        rel = ((features["current", "batched"] - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
        print(f"features, current vs {args.against} (batched): max relative difference {rel:.2e}")
    import shutil

    shutil.rmtree(tmp_root, ignore_errors=True)

if __name__ == "__main__":
    main()
