"""benchmarks/gpu_check.sh and gpu_check.py: one clear line without CUDA in GPU mode, and a CPU dry run of the whole
GPU-mode flow (GPU part on the CPU in bf16, CPU part in fp32, ratios) on a tiny model, so the script cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run(*args: str, timeout: int = 60, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "THREADS": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_mode_without_cuda_is_one_error_line_and_exit_2():
    for args in ((), ("--device", "cuda")):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            "Error: no CUDA device here (torch.cuda.is_available() is false); run with --device cpu for the CPU "
            "smoke check or --dry-run"]
        assert "== GPU" not in result.stdout  # nothing was run
    python = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert python.returncode == 2
    lines = python.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --device cuda: CUDA is not available")
    bad = run("--gpu")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: unknown argument '--gpu'")


@pytest.mark.slow
def test_dry_run_goes_through_every_part_and_prints_the_ratios():
    result = run("--dry-run", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "== GPU, bf16, scale 0 (device cpu, model tiny)" in out and "== CPU, fp32, scale 0" in out
    for line in ("SFT ", "DPO ", "CHES ", "LESS "):
        assert sum(row.startswith(line) for row in out.splitlines()) == 2, (line, out)
    ratios = out.split("== GPU/CPU ratios (rates measured in this run)")[1].strip().splitlines()
    assert [row.split()[0] for row in ratios] == ["sft", "dpo", "ches", "less"]
    assert all("ratio" in row and float(row.split("ratio")[1].split("x")[0]) > 0 for row in ratios)
    assert "stopped" not in out
