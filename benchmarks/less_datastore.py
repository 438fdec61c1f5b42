"""Benchmark: the LESS datastore in fp16 (format 2) against fp32 chunks (format 1), and the projectors' cost.

On one model, examples and Adam moments (from two real AdamW steps), in one process:
- builds the pool (Adam directions) and target (gradients) datastores in format 1 and format 2 and prints the
  fp16 rows' error relative to each row's norm (max, mean), how many chunks stayed fp32, the bytes on disk, and
  whether the top --fraction selection is the same;
- times the whole feature step (`build_features`) with each projector (`numpy`, `device`, and `trak` when
  traker imports), interleaved over --repeat rounds, best and median, as ratios to `numpy`.
Prints what it measured; nothing is asserted. Results go in docs/less.md.

    .venv/bin/python benchmarks/less_datastore.py --threads 1
    .venv/bin/python benchmarks/less_datastore.py --model local --n 64 --dim 8192 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import (
    LessConfig,
    add_lora,
    build_features,
    less_scores,
    load_base,
    make_projector,
    top_fraction,
)

sys.path.insert(0, str(Path(__file__).parent))
from less_features import synthetic_rows  # noqa: E402


def moments_from_two_steps(model, encoded, pad_id: int) -> lf.AdamMoments:
    params = [p for _, p in lf.trainable_parameters(model)]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    for start in (0, 8):
        batch = lf.pad_batch(encoded[start : start + 8], pad_id)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    state = {n: optimizer.state[p] for n, p in lf.trainable_parameters(model)}
    names = [n for n, _ in lf.trainable_parameters(model)]
    return lf.AdamMoments.from_named(state, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, local (embedded SmolLM2-135M) or a model folder")
    parser.add_argument("--n", type=int, default=320, help="pool examples")
    parser.add_argument("--targets", type=int, default=8, help="target examples")
    parser.add_argument("--dim", type=int, default=1024, help="projection dimension")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--fraction", type=float, default=0.05, help="selected fraction compared")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (0: no timing)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = synthetic_rows(args.n + args.targets)
    config = LessConfig(pool="p", targets="t", model=args.model, lora_r=8, lora_alpha=32, dim=args.dim,
                        max_length=args.max_length, device="cpu", dtype="fp32")
    model, tokenizer = load_base(args.model, [r["prompt"] + " " + r["completion"] for r in rows])
    model = add_lora(model, config)
    encoded = [lf.encode_example(tokenizer, lf.to_messages(r), args.max_length) for r in rows]
    pool, targets = encoded[: args.n], encoded[args.n :]
    pad = tokenizer.pad_token_id
    torch.manual_seed(0)
    model.train()
    moments = moments_from_two_steps(model, pool, pad)
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    print(f"model {args.model}: P = {n_params:,} LoRA parameters, {args.n} pool rows, {args.targets} targets, "
          f"d = {args.dim}, chunks of {config.chunk_examples}, {torch.get_num_threads()} thread(s)")

    with tempfile.TemporaryDirectory() as tmp:
        projector = make_projector(model, config)
        built = {}
        for fmt in (1, 2):
            for side, rows_, kind, m in (("pool", pool, "adam", moments), ("targets", targets, "sgd", None)):
                folder = Path(tmp) / f"f{fmt}-{side}"
                folder.mkdir()
                if fmt == 1:  # a folder in format 1 stays in it (as one written before formats existed)
                    (folder / "format.json").write_text(json.dumps({"format": 1}))
                built[fmt, side] = build_features(model, pad, rows_, folder, kind=kind, moments=m,
                                                  projector=projector, config=config)
        for side in ("pool", "targets"):
            a, b = built[1, side], built[2, side]
            error = (b - a).norm(dim=1) / a.norm(dim=1)
            chunks = sorted((Path(tmp) / f"f2-{side}").glob("grads-*.pt"))
            kept = sum(torch.load(c).dtype == torch.float32 for c in chunks)
            size = {f: sum(p.stat().st_size for p in (Path(tmp) / f"f{f}-{side}").glob("grads-*.pt")) for f in (1, 2)}
            print(f"{side}: fp16 rows vs fp32, error / row norm: max {error.max():.2e}, mean {error.mean():.2e}; "
                  f"{kept}/{len(chunks)} chunks kept fp32; chunk bytes fp16/fp32 = {size[2] / size[1]:.3f}")
        picks = {f: top_fraction(less_scores([built[f, "pool"]], [built[f, "targets"]], [1.0], 1), args.fraction)
                 for f in (1, 2)}
        same = len(set(picks[1]) & set(picks[2]))
        print(f"top {args.fraction:g} selection: {same}/{len(picks[1])} rows shared, same order: {picks[1] == picks[2]}")

        if args.repeat <= 0:
            return
        names = ["numpy", "device"]
        try:
            lf.require_trak()
            names.append("trak")
        except Exception as exc:  # noqa: BLE001 - reported, the others still run
            print(f"trak not timed: {exc}")
        projectors = {name: make_projector(model, config.model_copy(update={"projector": name})) for name in names}
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.repeat):
            for name in names:
                folder = Path(tmp) / f"t{round_}-{name}"
                start = time.perf_counter()
                build_features(model, pad, pool, folder, kind="adam", moments=moments, projector=projectors[name],
                               config=config)
                times[name].append(time.perf_counter() - start)
        base_best, base_median = min(times["numpy"]), statistics.median(times["numpy"])
        for name in names:
            best, median = min(times[name]), statistics.median(times[name])
            cached = getattr(projectors[name], "cache", False)
            print(f"feature step, projector {name:6s} ({'Π kept' if cached else 'Π regenerated per product'}): "
                  f"best {best:.2f} s ({args.n / best:,.2f} rows/s), median {median:.2f} s; "
                  f"time vs numpy {best / base_best:.2f}x best, {median / base_median:.2f}x median")


if __name__ == "__main__":
    main()
