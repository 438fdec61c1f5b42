"""What `accelerate launch` starts on a CPU-only machine (the installed accelerate), as docs/trainers-sft-dpo-ches.md
states: `--cpu --num_processes 2` runs the script once (its simple launcher builds an mpirun command only with
`--mpirun_hostfile`), while `--multi_gpu --num_processes 2` goes through torchrun and starts two ranks, which the
trainers join over gloo with `--device cpu`; a script that calls `trainers.launch.join_cpu_launch()` (the trainers
do, in `devices.setup`) gets two ranks under `--cpu` too. The script launched here only prints its rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

SCRIPT = ("import os\nwith open(f'started-{os.getpid()}.txt', 'w') as out:\n"  # a file per process (stdouts interleave)
          "    print('rank', os.environ.get('RANK', '-'), 'of', os.environ.get('WORLD_SIZE', '-'), 'threads', "
          "os.environ.get('OMP_NUM_THREADS'), file=out)\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(tmp_path, *options: str, script: str = SCRIPT) -> list[str]:
    text, script = script, tmp_path / "rank.py"
    script.write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    env.pop("ACCELERATE_CONFIG_FILE", None)
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *options, "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return sorted(path.read_text().strip() for path in tmp_path.glob("started-*.txt"))


@pytest.mark.slow
def test_cpu_flag_starts_one_process_whatever_num_processes_says(tmp_path):
    assert _launch(tmp_path, "--cpu", "--num_processes", "2") == ["rank - of - threads 1"]


@pytest.mark.slow
def test_join_cpu_launch_turns_the_one_process_into_the_asked_processes(tmp_path):
    """What the trainers do first (devices.setup): the lone `--cpu` process relaunches the script as N ranks."""
    script = "from skillweave.trainers.launch import join_cpu_launch\njoin_cpu_launch()\n" + SCRIPT
    lines = _launch(tmp_path, "--cpu", "--num_processes", "2", "--main_process_port", str(_free_port()),
                    "--num_cpu_threads_per_process", "2", script=script)
    assert lines == ["rank 0 of 2 threads 2", "rank 1 of 2 threads 2"]


@pytest.mark.slow
def test_multi_gpu_flag_starts_the_asked_processes_without_a_gpu(tmp_path):
    lines = _launch(tmp_path, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(_free_port()),
                    "--num_cpu_threads_per_process", "2")
    assert lines == ["rank 0 of 2 threads 2", "rank 1 of 2 threads 2"]  # torch threads per process as asked


FSDP_PROBE = """
import os, torch
from transformers import Trainer, TrainingArguments
from skillweave.trainers.models import tiny_model_and_tokenizer
model, _ = tiny_model_and_tokenizer(list("abcdefgh"), seed=0)
data = [{"input_ids": torch.tensor([1, 2, 3, 4]), "labels": torch.tensor([1, 2, 3, 4])} for _ in range(8)]
args = TrainingArguments(output_dir="probe", use_cpu=True, max_steps=1, per_device_train_batch_size=2,
                         report_to="none", save_strategy="no", disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=data)
trainer.train()
with open(f"rank{os.environ['RANK']}.txt", "w") as out:  # a file per rank: the ranks' stdout may interleave
    print("rank", os.environ["RANK"], trainer.accelerator.distributed_type.value, trainer.is_fsdp_enabled,
          type(trainer.model_wrapped).__name__, file=out)
"""


@pytest.mark.slow
def test_fsdp_launch_on_the_cpu_falls_back_to_ddp(tmp_path):
    """`accelerate launch --use_fsdp` with a CPU `Trainer` (as `train sft --device cpu` builds it) trains with DDP,
    not FSDP: accelerate's FSDP plugin is off for CPU processes, which is why `train sft --fsdp` does not use it (the
    model is sharded by transformers when it is loaded, tests/test_sft_fsdp.py) and `train dpo --fsdp` calls torch's
    `fully_shard` itself."""
    script = tmp_path / "probe.py"
    script.write_text(FSDP_PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
                           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                           "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(script)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = sorted(path.read_text().strip() for path in tmp_path.glob("rank*.txt"))
    assert lines == ["rank 0 MULTI_CPU False DistributedDataParallel", "rank 1 MULTI_CPU False DistributedDataParallel"]
