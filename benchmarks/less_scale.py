"""Benchmark: projected time and memory of a reference-size LESS datastore from measured per-block costs.

Reference size (Xia et al. 2024): a 7B Llama-2 model, LoRA r=128 on q/k/v/o of 32 layers (P = 134,217,728
LoRA parameters), 270k pool examples, d = 8192, 4 warmup checkpoints. Nothing of that size runs here; the
script measures, on this machine, the blocks the datastore build is made of and multiplies them out:

- Π block: generating 1024 rows x d of the seeded Rademacher matrix (what `RademacherProjector.block` does);
- projection: one (batch x 1024) @ (1024 x d) product per block;
- per-example gradients: tokens/s of the batched LoRA gradient pass on the measured model (default the embedded
  SmolLM2-135M, r and targets as given), scaled to 7B by the ratio of parameter counts (forward+backward cost
  grows about linearly with parameters; an assumption, printed);
- memory: the bytes each path holds, computed from the sizes: a feature batch's per-example gradients
  (batch x P fp32) and the one temporary of the in-place Adam direction (as many again), the projection buffer
  (none at this P: one 512 MiB row is over its 256 MB budget), the (chunk x d) accumulator and one streamed
  piece of Π; the old path also held the (chunk x P) gradient matrix before projecting.

The feature batch is what `--feature-batch-size` and `--feature-batch-tokens` give for the assumed example length
(32 and 8192: 16 examples of 512 tokens). At this P a batch is wider than the default projection buffer, so Π is
streamed once per feature batch; `--buffer-mb` (the run's `--projection-buffer-mb`) gathers several batches per
pass over Π at the cost of the buffer's memory. The old path streamed Π once per chunk.

It prints the CPU projection from blocks measured here and, when CUDA is available, the same blocks measured on the
GPU. Without a GPU it prints a GPU projection from stated assumptions instead (an H100's data-sheet rates and the
utilisations given by the --gpu-* options), every line of it marked ASSUMED. Nothing is asserted; results go in
docs/less.md and docs/benchmarks.md with the command line.

    .venv/bin/python benchmarks/less_scale.py                 # embedded SmolLM2 for the gradient rate
    .venv/bin/python benchmarks/less_scale.py --model tiny    # quicker, tiny random model
    .venv/bin/python benchmarks/less_scale.py --model tiny --buffer-mb 16384   # a 32-row projection buffer
"""

from __future__ import annotations

import argparse
import time

import torch

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import LessConfig, add_lora, load_base

REF = {"params_7b": 6.74e9, "lora_params": 32 * 4 * 128 * (4096 + 4096), "examples": 270_000, "dim": 8192,
       "checkpoints": 4}


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure_blocks(device: torch.device, dim: int, batch: int, repeat: int, generator: str) -> tuple[float, float]:
    projector = lf.RademacherProjector(1 << 20, dim, seed=0, device=device, generator=generator)
    gen = best_time(lambda: projector.block(3), repeat)
    block = projector.block(0)
    x = torch.randn(batch, lf.RademacherProjector.BLOCK_ROWS, device=device)
    matmul = best_time(lambda: x @ block, repeat)
    return gen, matmul


def measure_gradients(model_spec: str, device: torch.device, batch: int, tokens: int, lora_r: int,
                      targets: str) -> tuple[float, int, int]:
    """(tokens/s of the batched LoRA gradient pass, base parameters, LoRA parameters)."""
    words = [str(i) for i in range(10)] + ["alpha", "beta", "gamma", "delta"]
    text = " ".join(words[i % len(words)] for i in range(tokens))
    model, tokenizer = load_base(model_spec, [text], device=device)
    config = LessConfig(lora_r=lora_r, lora_alpha=4 * lora_r, lora_targets=targets, lora_dropout=0.0)
    base_params = sum(p.numel() for p in model.parameters())
    model = add_lora(model, config)
    model.eval()
    half = tokens // 2
    row = {"prompt": " ".join(text.split()[:half]), "completion": " ".join(text.split()[half:])}
    encoded = [lf.encode_example(tokenizer, lf.to_messages(row), 4 * tokens)] * batch  # room for a system prompt
    n_tokens = sum(len(e["input_ids"]) for e in encoded)
    with lf.BatchedGradients(model) as grads:
        grads(encoded[:1], tokenizer.pad_token_id)  # warm up
        seconds = best_time(lambda: grads(encoded, tokenizer.pad_token_id), 2)
    lora = sum(p.numel() for _, p in lf.trainable_parameters(model))
    return n_tokens / seconds, base_params, lora


def feature_batch(args) -> int:
    """Examples per feature batch for the assumed length: the example and padded-token limits of `length_batches`."""
    return max(1, min(args.batch, args.batch_tokens // args.tokens_per_example))


def buffer_rows(args) -> int:
    """Rows the projection buffer holds (`ProjectionBuffer`: the budget's fp32 rows, at most a chunk)."""
    budget = (args.buffer_mb << 20) or lf.PROJECTION_BUFFER_BYTES
    return min(args.chunk, budget // (4 * REF["lora_params"]))


def rows_per_pass(args) -> int:
    """Rows projected per pass over Π: whole feature batches gathered in the buffer, or one batch when the
    buffer cannot hold one."""
    batch, rows = feature_batch(args), buffer_rows(args)
    return (rows // batch) * batch if rows >= batch else batch


def projection_hours(gen: float, matmul: float, args) -> tuple[float, float]:
    """(current, old) hours per checkpoint spent on Π and the projection products, from per-block costs: current
    streams Π once per buffer pass (once per feature batch when a batch is wider than the buffer), old once per
    chunk. `matmul` is one block's product for a feature batch; products scale with their rows."""
    P, n = REF["lora_params"], REF["examples"]
    blocks = P // lf.RademacherProjector.BLOCK_ROWS
    batch, per_pass = feature_batch(args), rows_per_pass(args)
    passes = -(-n // args.chunk) * -(-args.chunk // per_pass)
    current = passes * blocks * (gen + matmul * per_pass / batch)
    old = -(-n // args.chunk) * blocks * (gen + matmul * args.chunk / batch)
    return current / 3600, old / 3600


def report(label: str, gen: float, matmul: float, tok_rate: float, base_params: int, args) -> None:
    n, ck, d = REF["examples"], REF["checkpoints"], REF["dim"]
    batch = feature_batch(args)
    scale = REF["params_7b"] / base_params
    grad_h = n * args.tokens_per_example / (tok_rate / scale) / 3600
    proj_h, old_proj_h = projection_hours(gen, matmul, args)
    print(f"\n[{label}] measured: Π block (1024 x {d}) {gen * 1e3:.2f} ms, (batch {batch} x 1024) @ "
          f"(1024 x {d}) {matmul * 1e3:.2f} ms, gradients {tok_rate:,.0f} tokens/s on {base_params / 1e6:.0f}M params")
    print(f"  7B gradient rate (ASSUMED: scaled x{scale:.0f} by parameters): {tok_rate / scale:,.1f} tokens/s")
    print(f"  per checkpoint, {n:,} examples x {args.tokens_per_example} tokens: gradients {grad_h:,.1f} h, "
          f"projection (Π per {rows_per_pass(args)} rows) {proj_h:,.1f} h [old, Π per chunk of {args.chunk}: {old_proj_h:,.1f} h]")
    print(f"  total for {ck} checkpoints: current {ck * (grad_h + proj_h):,.1f} h, old {ck * (grad_h + old_proj_h):,.1f} h;"
          f" ratio old/current {(grad_h + old_proj_h) / (grad_h + proj_h):.2f}")


def assumed_gpu(args) -> None:
    """The same projection for one GPU from data-sheet rates and assumed utilisations (no GPU measured here)."""
    P, n, ck, d = REF["lora_params"], REF["examples"], REF["checkpoints"], REF["dim"]
    batch = feature_batch(args)
    rows = lf.RademacherProjector.BLOCK_ROWS
    # Features need the forward pass and the backward pass to the activations (frozen weights get no gradient):
    # about 4 x parameters FLOPs per token, plus the per-example LoRA products (2 x P per token).
    flops_per_token = 4 * REF["params_7b"] + 2 * P
    tok_rate = args.gpu_bf16_tflops * 1e12 * args.gpu_mfu / flops_per_token
    grad_h = n * args.tokens_per_example / tok_rate / 3600
    # Π block with --projector device: randint int8, then to fp32, x2, -1 (about 1 + 5 + 8 + 8 bytes per entry)
    gen = rows * d * 22 / (args.gpu_bandwidth_tbs * 1e12)
    matmul = 2 * batch * rows * d / (args.gpu_fp32_tflops * 1e12 * args.gpu_gemm_efficiency)
    proj_h, old_proj_h = projection_hours(gen, matmul, args)
    print(f"\n[cuda] ASSUMED, not measured (no GPU on this machine): one GPU at {args.gpu_bf16_tflops:g} bf16 TFLOP/s x "
          f"{args.gpu_mfu:.0%} utilisation for the gradient pass, {args.gpu_fp32_tflops:g} fp32 TFLOP/s x "
          f"{args.gpu_gemm_efficiency:.0%} for the projection products, {args.gpu_bandwidth_tbs:g} TB/s for generating "
          f"Π (--projector device); defaults are an H100 SXM's data-sheet rates")
    print(f"  ASSUMED gradient rate {tok_rate:,.0f} tokens/s ({flops_per_token / 1e9:.1f} GFLOP per token); Π block "
          f"{gen * 1e3:.3f} ms, (batch {batch} x 1024) @ (1024 x {d}) {matmul * 1e3:.3f} ms")
    print(f"  ASSUMED per checkpoint: gradients {grad_h:,.1f} h, projection (Π per {rows_per_pass(args)} rows) {proj_h:,.1f} h "
          f"[old, Π per chunk of {args.chunk}: {old_proj_h:,.1f} h]")
    print(f"  ASSUMED total for {ck} checkpoints: current {ck * (grad_h + proj_h):,.1f} h, old "
          f"{ck * (grad_h + old_proj_h):,.1f} h; ratio old/current {(grad_h + old_proj_h) / (grad_h + proj_h):.2f}")
    weights = REF["params_7b"] * 2 / 2**30
    beside = memory(args)[0] / 2**30
    print(f"  memory (computed): bf16 weights {weights:.1f} GiB + {beside:.1f} GiB beside the model + activations "
          f"of one batch ({batch} x {args.tokens_per_example} tokens) = {weights + beside:.1f} GiB before activations")


def memory(args) -> tuple[int, int, dict[str, int]]:
    """(current bytes, old bytes, parts) held beside the model during the feature step."""
    P, d = REF["lora_params"], REF["dim"]
    batch = feature_batch(args)
    rows = buffer_rows(args)
    stream_rows = max(lf.RademacherProjector.BLOCK_ROWS, (1 << 24) // d)  # RademacherProjector's default piece
    parts = {"per-example gradients (batch x P fp32)": batch * P * 4,
             "Adam direction's temporary (batch x P fp32)": batch * P * 4,
             f"projection buffer ({rows} rows x P)": rows * P * 4,
             "chunk accumulator (chunk x d fp32)": args.chunk * d * 4,
             f"streamed Π piece ({stream_rows} x d fp32)": stream_rows * d * 4}
    current = sum(parts.values())
    return current, current - rows * P * 4 + args.chunk * P * 4, parts  # old: no buffer, the chunk's gradients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="model whose gradient rate is measured (local, tiny, folder)")
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--tokens-per-example", type=int, default=512, help="mean tokens per pool example (assumed)")
    parser.add_argument("--batch", type=int, default=LessConfig.model_fields["feature_batch_size"].default, help="feature batch size")
    parser.add_argument("--batch-tokens", type=int, default=LessConfig.model_fields["feature_batch_tokens"].default,
                        help="most padded tokens per feature batch (--feature-batch-tokens)")
    parser.add_argument("--chunk", type=int, default=LessConfig.model_fields["chunk_examples"].default, help="examples per datastore chunk")
    parser.add_argument("--buffer-mb", type=int, default=0,
                        help="--projection-buffer-mb of the projected run (0: 256 MiB, which holds no row at this P)")
    parser.add_argument("--gpu-bf16-tflops", type=float, default=989.0, help="assumed GPU bf16 dense TFLOP/s (H100 SXM)")
    parser.add_argument("--gpu-fp32-tflops", type=float, default=67.0, help="assumed GPU fp32 TFLOP/s (H100 SXM)")
    parser.add_argument("--gpu-bandwidth-tbs", type=float, default=3.35, help="assumed GPU memory TB/s (H100 SXM)")
    parser.add_argument("--gpu-mfu", type=float, default=0.4, help="assumed utilisation of the gradient pass")
    parser.add_argument("--gpu-gemm-efficiency", type=float, default=0.7,
                        help="assumed share of fp32 peak the projection products reach")
    parser.add_argument("--measure-tokens", type=int, default=128, help="tokens per example in the gradient measurement")
    parser.add_argument("--measure-batch", type=int, default=2, help="examples per measured gradient pass")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    P, d = REF["lora_params"], REF["dim"]
    current, old, parts = memory(args)
    print(f"reference size: 7B model, LoRA r=128 q/k/v/o -> P = {P:,}, {REF['examples']:,} examples, d = {d}, "
          f"{REF['checkpoints']} checkpoints; assumed {args.tokens_per_example} tokens per example -> feature batches "
          f"of {feature_batch(args)} (--feature-batch-size {args.batch}, --feature-batch-tokens {args.batch_tokens})")
    print("memory beside the model, computed from the sizes: " +
          ", ".join(f"{name} {size / 2**30:,.2f} GiB" for name, size in parts.items()))
    print(f"  current {current / 2**30:,.1f} GiB, the same for any --chunk-examples; old path (chunk {args.chunk} x P "
          f"fp32 gradients instead of the buffer) {old / 2**30:,.1f} GiB ({old / current:.1f}x more); a whole fp32 Π would be "
          f"{P * d * 4 / 2**40:,.1f} TiB")
    print(f"model weights in bf16: {REF['params_7b'] * 2 / 2**30:.1f} GiB; LoRA Adam moments fp32: "
          f"{2 * P * 4 / 2**30:.1f} GiB")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        tok_rate, base_params, lora = measure_gradients(args.model, device, args.measure_batch, args.measure_tokens,
                                                        args.lora_r, args.lora_targets)
        for generator in ("numpy", "device"):
            gen, matmul = measure_blocks(device, d, feature_batch(args), args.repeat, generator)
            report(f"{device.type}, --projector {generator}, torch threads {torch.get_num_threads()}", gen, matmul,
                   tok_rate, base_params, args)
    if not torch.cuda.is_available():
        assumed_gpu(args)


if __name__ == "__main__":
    main()
