"""Benchmark: projected time and memory of a reference-size LESS datastore from measured per-block costs.

Reference size (Xia et al. 2024): a 7B Llama-2 model, LoRA r=128 on q/k/v/o of 32 layers (P = 134,217,728
LoRA parameters), 270k pool examples, d = 8192, 4 warmup checkpoints. Nothing of that size runs here; the
script measures, on this machine, the blocks the datastore build is made of and multiplies them out:

- Π block: generating 1024 rows x d of the seeded Rademacher matrix (what `RademacherProjector.block` does);
- projection: one (batch x 1024) @ (1024 x d) product per block;
- per-example gradients: tokens/s of the batched LoRA gradient pass on the measured model (default the embedded
  SmolLM2-135M, r and targets as given), scaled to 7B by the ratio of parameter counts (forward+backward cost
  grows about linearly with parameters; an assumption, printed);
- memory: the bytes each path holds, computed from the sizes (the old path held a (chunk x P) fp32 gradient
  matrix before projecting; the current one holds one (batch x P) batch and a (chunk x d) accumulator).

It prints the CPU projection and, when CUDA is available, the same blocks measured on the GPU. Nothing is
asserted; results go in docs/results/less.md with the command line.

    .venv/bin/python benchmarks/less_scale.py                 # embedded SmolLM2 for the gradient rate
    .venv/bin/python benchmarks/less_scale.py --model tiny    # quicker, tiny random model
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


def report(label: str, gen: float, matmul: float, tok_rate: float, base_params: int, args) -> None:
    P, d, n, ck = REF["lora_params"], REF["dim"], REF["examples"], REF["checkpoints"]
    blocks = P // lf.RademacherProjector.BLOCK_ROWS
    batches = -(-n // args.batch)
    chunks = -(-n // args.chunk)
    scale = REF["params_7b"] / base_params
    grad_s = n * args.tokens_per_example / (tok_rate / scale)
    gen_per_batch = blocks * gen  # Π is streamed once per projected batch (old path: once per chunk)
    mm_per_batch = blocks * matmul
    new_s = grad_s + batches * (gen_per_batch + mm_per_batch)
    old_s = grad_s + chunks * (blocks * gen + blocks * matmul * args.chunk / args.batch)
    hours = 3600.0
    print(f"\n[{label}] measured: Π block (1024 x {d}) {gen * 1e3:.2f} ms, (batch {args.batch} x 1024) @ "
          f"(1024 x {d}) {matmul * 1e3:.2f} ms, gradients {tok_rate:,.0f} tokens/s on {base_params / 1e6:.0f}M params")
    print(f"  7B gradient rate (scaled x{scale:.0f} by parameters): {tok_rate / scale:,.1f} tokens/s")
    print(f"  per checkpoint, {n:,} examples x {args.tokens_per_example} tokens: gradients {grad_s / hours:,.1f} h")
    print(f"  projection, Π streamed per batch of {args.batch} (current): {batches:,} batches x "
          f"{gen_per_batch + mm_per_batch:,.1f} s = {batches * (gen_per_batch + mm_per_batch) / hours:,.1f} h "
          f"({gen_per_batch / (gen_per_batch + mm_per_batch):.0%} generating Π)")
    print(f"  projection, Π streamed per chunk of {args.chunk} (old): {chunks:,} chunks x "
          f"{blocks * gen + blocks * matmul * args.chunk / args.batch:,.1f} s")
    print(f"  total for {ck} checkpoints: current {ck * new_s / hours:,.1f} h, old {ck * old_s / hours:,.1f} h; "
          f"ratio old/current {old_s / new_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="model whose gradient rate is measured (local, tiny, folder)")
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--tokens-per-example", type=int, default=512, help="mean tokens per pool example (assumed)")
    parser.add_argument("--batch", type=int, default=LessConfig.feature_batch_size, help="feature batch size")
    parser.add_argument("--chunk", type=int, default=LessConfig.chunk_examples, help="examples per datastore chunk")
    parser.add_argument("--measure-tokens", type=int, default=128, help="tokens per example in the gradient measurement")
    parser.add_argument("--measure-batch", type=int, default=2, help="examples per measured gradient pass")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    P, d = REF["lora_params"], REF["dim"]
    bytes_old = args.chunk * P * 4
    bytes_new = args.batch * P * 4 + args.chunk * d * 4 + 1024 * d * 4
    print(f"reference size: 7B model, LoRA r=128 q/k/v/o -> P = {P:,}, {REF['examples']:,} examples, d = {d}, "
          f"{REF['checkpoints']} checkpoints; assumed {args.tokens_per_example} tokens per example")
    print(f"memory beside the model: old path (chunk {args.chunk} x P fp32 gradients) {bytes_old / 2**30:,.1f} GiB; "
          f"current (batch {args.batch} x P + chunk x d accumulator + one Π block) {bytes_new / 2**30:,.1f} GiB "
          f"({bytes_old / bytes_new:.1f}x less); a whole fp32 Π would be {P * d * 4 / 2**40:,.1f} TiB")
    print(f"model weights in bf16: {REF['params_7b'] * 2 / 2**30:.1f} GiB; LoRA Adam moments fp32: "
          f"{2 * P * 4 / 2**30:.1f} GiB")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        tok_rate, base_params, lora = measure_gradients(args.model, device, args.measure_batch, args.measure_tokens,
                                                        args.lora_r, args.lora_targets)
        for generator in ("numpy", "device"):
            gen, matmul = measure_blocks(device, d, args.batch, args.repeat, generator)
            report(f"{device.type}, --projector {generator}, torch threads {torch.get_num_threads()}", gen, matmul,
                   tok_rate, base_params, args)
    if not torch.cuda.is_available():
        print("\n[cuda] not measured: no GPU on this machine")


if __name__ == "__main__":
    main()
