"""What `accelerate launch` starts on a CPU-only machine (the installed accelerate), as docs/trainers-sft-dpo-ches.md
states: `--cpu --num_processes 2` runs the script once (its simple launcher builds an mpirun command only with
`--mpirun_hostfile`), while `--multi_gpu --num_processes 2` goes through torchrun and starts two ranks, which the
trainers join over gloo with `--device cpu`. The script launched here only prints its rank; no model is loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

SCRIPT = ("import os\nprint('rank', os.environ.get('RANK', '-'), 'of', os.environ.get('WORLD_SIZE', '-'), 'threads', "
          "os.environ.get('OMP_NUM_THREADS'), flush=True)\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(tmp_path, *options: str) -> list[str]:
    script = tmp_path / "rank.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    env.pop("ACCELERATE_CONFIG_FILE", None)
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *options, "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))


@pytest.mark.slow
def test_cpu_flag_starts_one_process_whatever_num_processes_says(tmp_path):
    assert _launch(tmp_path, "--cpu", "--num_processes", "2") == ["rank - of - threads 1"]


@pytest.mark.slow
def test_multi_gpu_flag_starts_the_asked_processes_without_a_gpu(tmp_path):
    lines = _launch(tmp_path, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(_free_port()),
                    "--num_cpu_threads_per_process", "2")
    assert lines == ["rank 0 of 2 threads 2", "rank 1 of 2 threads 2"]  # torch threads per process as asked
