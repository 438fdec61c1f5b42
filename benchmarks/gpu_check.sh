#!/usr/bin/env bash
# Device check of the trainers on the embedded SmolLM2-135M: SFT tokens/s, DPO pairs/s, CHES pairs/s and LESS
# examples/s with peak memory, on the GPU in bf16 and on the CPU in fp32, and the GPU/CPU ratio of each rate.
#
#   benchmarks/gpu_check.sh                  # GPU (bf16, --scale 16) then CPU (fp32, --scale 1); < 8 min on one H100
#   benchmarks/gpu_check.sh --device cpu     # CPU only, smallest workload (--scale 0): a smoke check anywhere
#   MODEL=tiny benchmarks/gpu_check.sh --device cpu   # the same on a tiny random model: seconds
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_SCALE (16), CPU_SCALE (1), SMOKE_SCALE (0), MODEL (local),
# THREADS (0: torch's default).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
GPU_SCALE="${GPU_SCALE:-16}"
CPU_SCALE="${CPU_SCALE:-1}"
MODEL="${MODEL:-local}"
THREADS="${THREADS:-0}"
DEVICE=auto
if [ "${1:-}" = "--device" ]; then DEVICE="${2:?--device needs cpu or cuda}"; fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

has_cuda="$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')"
if [ "$DEVICE" != cpu ]; then
  if [ "$has_cuda" != 1 ]; then
    echo "Error: no CUDA device here; run with --device cpu for the CPU smoke check" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  echo "== GPU, bf16, scale $GPU_SCALE"
  timeout 360 "$PYTHON" benchmarks/gpu_check.py --device cuda --dtype bf16 --scale "$GPU_SCALE" --model "$MODEL" --json "$OUT/gpu.json"
fi
if [ "$DEVICE" = cpu ]; then CPU_SCALE="${SMOKE_SCALE:-0}"; fi
echo "== CPU, fp32, scale $CPU_SCALE ($(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg))"
timeout 420 "$PYTHON" benchmarks/gpu_check.py --device cpu --dtype fp32 --scale "$CPU_SCALE" --model "$MODEL" \
  --threads "$THREADS" --json "$OUT/cpu.json"
if [ -f "$OUT/gpu.json" ]; then
  "$PYTHON" - "$OUT/gpu.json" "$OUT/cpu.json" <<'EOF'
import json, sys
gpu, cpu = (json.load(open(p)) for p in sys.argv[1:3])
print("== GPU/CPU ratios (rates measured in this run)")
for name, key in (("sft", "tokens_per_s"), ("dpo", "pairs_per_s"), ("ches", "pairs_per_s"), ("less", "examples_per_s")):
    if name in gpu and name in cpu:
        print(f"{name:5s} {key:15s} GPU {gpu[name][key]:10.1f}  CPU {cpu[name][key]:8.2f}  ratio {gpu[name][key] / cpu[name][key]:8.1f}x"
              f"  peak GPU {gpu[name]['peak_gib']:.2f} GiB")
EOF
fi
