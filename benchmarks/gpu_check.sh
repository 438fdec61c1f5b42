#!/usr/bin/env bash
# Device check of the trainers on the embedded SmolLM2-135M: SFT tokens/s, DPO pairs/s, CHES pairs/s and LESS
# examples/s with peak memory, on the GPU in bf16 and on the CPU in fp32, and the GPU/CPU ratio of each rate.
#
#   benchmarks/gpu_check.sh                  # GPU (bf16, --scale 16) then CPU (fp32, --scale 1); < 8 min on one H100
#   benchmarks/gpu_check.sh --device cpu     # CPU only, smallest workload (--scale 0): a smoke check anywhere
#   MODEL=tiny benchmarks/gpu_check.sh --device cpu   # the same on a tiny random model: seconds
#   benchmarks/gpu_check.sh --dry-run        # the whole GPU-mode flow with the "GPU" part on the CPU in bf16, tiny
#                                            # model, smallest workload, ratios printed: what tests/test_gpu_check.py runs
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_SCALE (16), CPU_SCALE (1), SMOKE_SCALE (0), MODEL (local;
# tiny with --dry-run), THREADS (0: torch's default), GPU_TIMEOUT (210 s), CPU_TIMEOUT (210 s). The two timeouts
# bound the run below 8 minutes: a part that runs out of time keeps the rates it measured before it was stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
GPU_SCALE="${GPU_SCALE:-16}"
CPU_SCALE="${CPU_SCALE:-1}"
GPU_TIMEOUT="${GPU_TIMEOUT:-210}"
CPU_TIMEOUT="${CPU_TIMEOUT:-210}"
THREADS="${THREADS:-0}"
DEVICE=auto
GPU_DEVICE=cuda
case "${1:-}" in
  --device) DEVICE="${2:?--device needs cpu or cuda}" ;;
  --dry-run) DEVICE=dry-run; GPU_DEVICE=cpu; GPU_SCALE=0; CPU_SCALE=0; MODEL="${MODEL:-tiny}" ;;
  "") ;;
  *) echo "Error: unknown argument '$1'; use --device cpu|cuda or --dry-run" >&2; exit 2 ;;
esac
MODEL="${MODEL:-local}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

has_cuda="$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')"
if [ "$DEVICE" != cpu ]; then
  if [ "$has_cuda" != 1 ] && [ "$DEVICE" != dry-run ]; then
    echo "Error: no CUDA device here (torch.cuda.is_available() is false); run with --device cpu for the CPU smoke check or --dry-run" >&2
    exit 2
  fi
  if [ "$GPU_DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; fi
  echo "== GPU, bf16, scale $GPU_SCALE (device $GPU_DEVICE, model $MODEL)"
  timeout "$GPU_TIMEOUT" "$PYTHON" benchmarks/gpu_check.py --device "$GPU_DEVICE" --dtype bf16 --scale "$GPU_SCALE" \
    --model "$MODEL" --json "$OUT/gpu.json" || echo "GPU part stopped (exit $?): rates measured before that are kept"
fi
if [ "$DEVICE" = cpu ]; then CPU_SCALE="${SMOKE_SCALE:-0}"; fi
echo "== CPU, fp32, scale $CPU_SCALE ($(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg))"
timeout "$CPU_TIMEOUT" "$PYTHON" benchmarks/gpu_check.py --device cpu --dtype fp32 --scale "$CPU_SCALE" --model "$MODEL" \
  --threads "$THREADS" --json "$OUT/cpu.json" || echo "CPU part stopped (exit $?): rates measured before that are kept"
if [ -f "$OUT/gpu.json" ] && [ -f "$OUT/cpu.json" ]; then
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
