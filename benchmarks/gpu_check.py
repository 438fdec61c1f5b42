"""One device check of the trainers on the embedded SmolLM2-135M: SFT, DPO, CHES scoring and LESS features.

For each it prints the rate (SFT tokens/s, DPO pairs/s, CHES pairs/s, LESS examples/s), the seconds, and the peak
memory (GPU: `torch.cuda.max_memory_allocated`; CPU: the process's peak RSS), and writes them as JSON with
`--json FILE`. `benchmarks/gpu_check.sh` runs it on the GPU in bf16 and on the CPU and prints the ratios.

    .venv/bin/python benchmarks/gpu_check.py --device cuda --dtype bf16 --scale 8
    .venv/bin/python benchmarks/gpu_check.py --device cpu --dtype fp32 --scale 1
    .venv/bin/python benchmarks/gpu_check.py --device cpu --scale 0 --model tiny      # seconds: a smoke check
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

WORDS = ("the a one two three four five six seven eight nine ten cat dog sun moon red blue green run jump eat "
         "river stone light north").split()


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def peak_memory(device: torch.device) -> float:
    """GiB: peak allocated on the GPU since the last reset, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(device: torch.device, fn):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", default="local", help="local (embedded SmolLM2-135M), a model folder, or tiny "
                                                         "(random-init, for a quick smoke check)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--scale", type=int, default=1,
                        help="workload multiplier (0: the smallest workload, a smoke check; 1: CPU; 16: GPU)")
    parser.add_argument("--only", default="sft,dpo,ches,less", help="comma-separated subset")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()

    from skillweave.errors import ConfigError
    from skillweave.trainers import ches, dpo, sft
    from skillweave.trainers import less_features as lf
    from skillweave.trainers.data import PreferencePair, SFTExample
    from skillweave.trainers.devices import resolve_device, resolve_dtype
    from skillweave.trainers.less import LessConfig, add_lora, build_features
    from skillweave.trainers.models import load_model_and_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except ConfigError as exc:  # e.g. --device cuda without CUDA: one line, exit 2
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    rng = random.Random(0)
    s = max(args.scale, 1)
    smoke = args.scale == 0
    results: dict[str, dict] = {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                                "threads": torch.get_num_threads()}
    only = set(args.only.split(","))

    def save() -> None:  # after every part, so a part stopped by the caller's timeout keeps the earlier ones
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    def fresh():
        if args.model == "tiny":
            from skillweave.trainers.less import load_base
            from skillweave.trainers.templates import template_words

            return load_base("tiny", [" ".join([*template_words(), *WORDS])], device=device, dtype=dtype)
        return load_model_and_tokenizer(args.model, device=device, dtype=dtype)

    if "sft" in only:
        model, tokenizer = fresh()
        examples = [SFTExample(sentence(rng, 8, 24), sentence(rng, 24, 64)) for _ in range(4 if smoke else 16 * s)]
        config = sft.SFTConfig(batch_size=8, epochs=1, lr=1e-5, max_length=256, device=str(device))
        features, _ = sft.encode_sft(tokenizer, examples, sft.get_template(config.train_template), 256)
        tokens = sum(len(f["input_ids"]) for f in features)
        out, seconds = timed(device, lambda: sft.train_sft(model, tokenizer, examples, config))
        results["sft"] = {"examples": len(examples), "steps": out["steps"], "tokens": tokens, "seconds": seconds,
                          "tokens_per_s": tokens / seconds, "peak_gib": peak_memory(device)}
        print(f"SFT   {tokens:7d} tokens in {seconds:7.2f} s: {tokens / seconds:9.1f} tokens/s  "
              f"peak {results['sft']['peak_gib']:.2f} GiB")
        save()
        del model

    pairs = [PreferencePair(sentence(rng, 6, 16), sentence(rng, 8, 40), sentence(rng, 8, 40), f"p{i}")
             for i in range(8 if smoke else 32 * s)]
    if "dpo" in only:
        model, tokenizer = fresh()
        n = 4 if smoke else 8 * s
        chosen, rejected, _ = ches.encode_pairs(tokenizer, pairs[:n], max_length=256)
        config = dpo.DPOConfig(batch_size=8, lr=1e-6, epochs=1)
        out, seconds = timed(device, lambda: dpo.train_dpo(model, tokenizer, chosen, rejected, config))
        results["dpo"] = {"pairs": len(chosen), "steps": out["steps"], "seconds": seconds,
                          "pairs_per_s": len(chosen) / seconds, "peak_gib": peak_memory(device)}
        print(f"DPO   {len(chosen):7d} pairs  in {seconds:7.2f} s: {len(chosen) / seconds:9.2f} pairs/s   "
              f"peak {results['dpo']['peak_gib']:.2f} GiB (reference, training steps and final log-probs)")
        save()
        del model

    if "ches" in only:
        model, tokenizer = fresh()
        out, seconds = timed(device, lambda: ches.score_pairs(model, tokenizer, pairs, batch_size=32, max_length=256))
        results["ches"] = {"pairs": len(out), "seconds": seconds, "pairs_per_s": len(out) / seconds,
                           "peak_gib": peak_memory(device)}
        print(f"CHES  {len(out):7d} pairs  in {seconds:7.2f} s: {len(out) / seconds:9.2f} pairs/s   "
              f"peak {results['ches']['peak_gib']:.2f} GiB")
        save()
        del model

    if "less" in only:
        model, tokenizer = fresh()
        config = LessConfig(lora_r=8, lora_alpha=32, lora_dropout=0.0, dim=8192, feature_batch_size=16)
        model = add_lora(model, config).eval()
        rows = [{"prompt": sentence(rng, 8, 24), "completion": sentence(rng, 8, 48)} for _ in range(4 if smoke else 8 * s)]
        encoded = [lf.encode_example(tokenizer, lf.to_messages(r), 256) for r in rows]
        n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
        projector = lf.RademacherProjector(n_params, config.dim, seed=0, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            out, seconds = timed(device, lambda: build_features(model, tokenizer.pad_token_id, encoded, Path(tmp),
                                                               kind="sgd", moments=None, projector=projector,
                                                               config=config))
        results["less"] = {"examples": len(encoded), "lora_params": n_params, "dim": config.dim, "seconds": seconds,
                           "examples_per_s": len(encoded) / seconds, "peak_gib": peak_memory(device)}
        print(f"LESS  {len(encoded):7d} examples in {seconds:7.2f} s: {len(encoded) / seconds:9.2f} examples/s  "
              f"peak {results['less']['peak_gib']:.2f} GiB (P = {n_params:,}, d = {config.dim}, Π generated once)")
    save()


if __name__ == "__main__":
    main()
