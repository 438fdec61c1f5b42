"""Where the embedded model's floor lies on this CPU: memory bandwidth, matmul rates per weight type, attention.

A decode step of the embedded model reads every matmul weight once (whatever the number of rows) and every row's
keys and values over the step's window; a prefill multiplies each prompt token by every weight. So its floor is
set by two numbers of the machine: how fast one and two cores read memory, and how fast the matmul kernels run
per weight type. This script measures both in one process and prints what they imply for SmolLM2-135M (the
shapes are that model's; no weights are read): what one decode step's matmuls and attention and one prefill
token cost at the measured rates. Compare them with a real step (`benchmarks/local_model.py --timeline`).

Printed, one thread and two:
  - read bandwidth (summing a 512 MiB float32 tensor) and copy bandwidth (reads plus writes);
  - GFLOP/s of the four matmul paths the engine has (float32 through MKL, float16 packed for fbgemm, bfloat16
    through oneDNN with the activations converted per call, int8 through fbgemm with each row quantised on its
    own) at 8, 64 and 256 rows, over 30 distinct matrices of the gate/up projection's shape (3,072 x 576), so
    that the weights stream from memory as in a decode step;
  - one layer's attention for `--rows` rows over `--columns` columns (torch's SDPA over a float32 window, the
    grouped bfloat16 matmuls of a bfloat16 cache) and the bandwidth it reached;
  - what one decode step and one prefill token cost at these rates, and the attention's floor at the read
    bandwidth.

    python benchmarks/cpu_roof.py
    python benchmarks/cpu_roof.py --rows 8 --columns 600 --threads 1,2
"""

from __future__ import annotations

import argparse
import os
import time

# SmolLM2-135M-Instruct (the embedded model's config.json)
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB = 576, 1536, 30, 9, 3, 49152
HEAD_DIM = HIDDEN // HEADS
LAYER_SHAPES = [((HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN), (HIDDEN, HIDDEN), (2 * INTERMEDIATE, HIDDEN),
                (HIDDEN, INTERMEDIATE)]  # fused q/k/v, output projection, fused gate/up, down
LAYER_WEIGHTS = sum(n * k for n, k in LAYER_SHAPES)
HEAD_WEIGHTS = VOCAB * HIDDEN


def wall_ms(fn, repeats: int) -> float:
    """Wall ms per call of `fn`, after one warm-up call (the machine should be idle: load average printed)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def bandwidth(torch) -> tuple[float, float]:
    """GB/s: reading a 512 MiB tensor (its sum), and copying it (reads plus writes counted)."""
    x = torch.ones(1 << 27)
    y = torch.empty_like(x)
    read = wall_ms(lambda: x.sum(), 5)
    copy = wall_ms(lambda: y.copy_(x), 5)
    size = x.numel() * 4 / 1e9
    return size / read * 1000, 2 * size / copy * 1000


def matmul_paths(torch):
    """name -> (make(weight) -> f(x)): the engine's four matmul paths, weights prepared once as the engine does."""
    from skillweave.providers.local_engine import LlamaLite

    bare = LlamaLite(dict(model_type="llama", hidden_size=HIDDEN, num_attention_heads=HEADS, num_hidden_layers=0,
                          vocab_size=8), {"model.embed_tokens.weight": torch.zeros(8, HIDDEN),
                                          "model.norm.weight": torch.ones(HIDDEN)})
    linear = torch.nn.functional.linear

    def fp16(w):
        packed = torch.ops.quantized.linear_prepack_fp16(w, None)
        return lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed)

    def bf16(w):
        w = w.bfloat16()
        return lambda x: linear(x.bfloat16(), w).float()

    def int8(w):
        packed = bare._pack_int8(w, None)
        return lambda x: bare._linear_int8(x, packed)

    return {"float32 (MKL)": lambda w: (lambda x: linear(x, w)), "float16 (fbgemm)": fp16,
            "bfloat16 (oneDNN)": bf16, "int8 (fbgemm, rows alone)": int8}


def attention(torch, rows: int, columns: int) -> dict[str, float]:
    """Wall ms of one layer's attention for one query per row over `columns` columns of a wider cache."""
    cap = columns + 256
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(rows, KV_HEADS, cap, HEAD_DIM, generator=gen)
    values = torch.randn(rows, KV_HEADS, cap, HEAD_DIM, generator=gen)
    q = torch.randn(rows, HEADS, 1, HEAD_DIM, generator=gen)
    mask = torch.zeros(rows, 1, 1, columns)
    k, v = keys[:, :, :columns], values[:, :, :columns]
    kb, vb = k.bfloat16().contiguous(), v.bfloat16().contiguous()

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def grouped_bf16():
        g = (q * HEAD_DIM ** -0.5).bfloat16().reshape(rows, KV_HEADS, HEADS // KV_HEADS, HEAD_DIM)
        probs = torch.softmax(torch.matmul(g, kb.transpose(-1, -2)).float(), dim=-1).bfloat16()
        return torch.matmul(probs, vb)

    return {"SDPA, float32 cache": wall_ms(sdpa, 100), "grouped matmuls, bfloat16 cache": wall_ms(grouped_bf16, 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8, help="rows of a decode step (default 8)")
    parser.add_argument("--columns", type=int, default=600,
                        help="columns of a decode step's window (default 600, a Skill-Mix chain's typical width)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to measure (default 1,2)")
    args = parser.parse_args()
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if not threads or min(threads) < 1 or args.rows < 1 or args.columns < 1:
            raise ValueError
    except ValueError:
        parser.error("--threads takes positive integers separated by commas; --rows and --columns positive")

    import torch

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch {torch.__version__}")
    gen = torch.Generator().manual_seed(0)
    # one distinct matrix per layer, so that a pass streams them from memory as a decode step streams its weights
    weights = [torch.randn(*LAYER_SHAPES[2], generator=gen) * 0.02 for _ in range(LAYERS)]
    paths = {name: [make(w) for w in weights] for name, make in matmul_paths(torch).items()}
    kv_bytes_per_token = LAYERS * 2 * KV_HEADS * HEAD_DIM * 4  # float32 keys and values, all layers
    position_flop = 2 * (LAYERS * LAYER_WEIGHTS + HEAD_WEIGHTS)  # a decode position, output layer included
    prefill_flop = 2 * LAYERS * LAYER_WEIGHTS  # a prompt token (the output layer runs for the last one only)
    window = args.rows * args.columns * kv_bytes_per_token  # the step's float32 keys and values, all layers
    for count in threads:
        torch.set_num_threads(count)
        read, copy = bandwidth(torch)
        print(f"\n== {count} thread(s) ==")
        print(f"memory: read {read:.1f} GB/s, copy {copy:.1f} GB/s (reads plus writes)")
        rates = {}
        for name, fs in paths.items():
            cells = []
            for m in (8, 64, 256):
                x = torch.randn(m, HIDDEN, generator=gen)
                ms = wall_ms(lambda fs=fs, x=x: [f(x) for f in fs], 5 if m < 256 else 2)
                rates[name, m] = 2 * m * LAYERS * weights[0].numel() / ms / 1e6
                cells.append(f"{m} rows {rates[name, m]:6.1f}")
            print(f"matmul GFLOP/s (weights streamed), {name:>26}: " + ", ".join(cells))
        att = attention(torch, args.rows, args.columns)
        sdpa = att["SDPA, float32 cache"]
        print(f"one layer's attention, {args.rows} rows x {args.columns} columns: "
              + ", ".join(f"{name} {ms:.3f} ms" for name, ms in att.items())
              + f" (float32 SDPA reads {window / LAYERS / 1e6:.1f} MB: {window / LAYERS / sdpa / 1e6:.1f} GB/s)")
        print(f"one decode step ({args.rows} rows, {args.columns} columns): attention over the float32 cache "
              f"({window / 1e6:.0f} MB) {LAYERS * sdpa:.1f} ms, its floor at the read bandwidth {window / read / 1e6:.1f} ms;"
              f" bfloat16 cache {LAYERS * att['grouped matmuls, bfloat16 cache']:.1f} ms (floor {window / 2 / read / 1e6:.1f})")
        for name in paths:
            print(f"  {name:>26}: the step's matmuls at the 8-row rate {args.rows * position_flop / rates[name, 8] / 1e6:5.1f}"
                  f" ms; a prefill token at the 256-row rate {prefill_flop / rates[name, 256] / 1e6:.2f} ms")


if __name__ == "__main__":
    main()
