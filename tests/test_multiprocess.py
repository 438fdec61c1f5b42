"""Several processes through `accelerate launch` (DDP, gloo on the CPU) give the same results as one process:
the same DPO update, the same CHES scores, the same LESS features and selection; SFT trains under DDP and
writes one checkpoint.

The tests launch `accelerate launch --cpu --num_processes 2`, the command the docs give. accelerate itself starts
one process for it (its simple launcher; tests/test_accelerate_launch_cpu.py); that process relaunches the script
as two through `accelerate launch --multi_gpu` (trainers/launch.py), and `accelerate.Accelerator(cpu=True)` joins
them over gloo. The DPO test also runs the direct `--multi_gpu --num_processes 2 ... --device cpu` form, and, where
MPI is installed, `--cpu --mpirun_hostfile` (mpirun starts the two; they read MPI's rank variables).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from skillweave.cli import main
from skillweave.trainers.data import PreferencePair
from skillweave.trainers.models import tiny_model_and_tokenizer
from skillweave.trainers.templates import template_words

WORDS = [*template_words(), *"a b c d e f g h i j k l".split()]
# Each launch starts two fresh interpreters (about 35 s per test on a shared 2-core machine): slow tests.
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: list[str], cwd, mode: str = "--cpu") -> str:
    """Run `skillweave ARGS` in two processes (`accelerate launch --cpu` or `--multi_gpu`); the main process's stdout."""
    done = launch_process(args, cwd, mode)
    assert done.returncode == 0, done.stderr[-3000:]
    if mode == "--cpu":  # accelerate started one process; it started the two (trainers/launch.py)
        assert "accelerate launch --cpu: starting 2 processes (gloo)" in done.stderr
    return done.stdout


def _hostfile(cwd) -> str:
    """Two slots on this machine, in the installed MPI's hostfile syntax (as accelerate tells them apart)."""
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    (cwd / "hostfile").write_text("localhost slots=2\n" if "Open MPI" in version else "localhost:2\n")
    return str(cwd / "hostfile")


def launch_process(args: list[str], cwd, mode: str = "--cpu") -> subprocess.CompletedProcess:
    options = ["--cpu", "--mpirun_hostfile", _hostfile(cwd)] if mode == "mpirun" else [mode]
    command = [sys.executable, "-m", "accelerate.commands.launch", *options, "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "skillweave", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(cwd / "hf"),
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}  # Open MPI refuses root otherwise
    env.pop("ACCELERATE_CONFIG_FILE", None)  # no user accelerate config
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_process(args: list[str], capsys) -> str:
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.fixture()
def tiny_pairs(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    letters = "abcdefghijkl"
    pairs = [PreferencePair(f"{letters[i % 12]} {letters[(i + 3) % 12]}",
                            " ".join(letters[(i + j) % 12] for j in range(1 + i % 3)),
                            " ".join(letters[(i + 5 + j) % 12] for j in range(1 + i % 4)), f"pair-{i}")
             for i in range(11)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p.to_dict()) for p in pairs))
    return tmp_path


def _weights(folder) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(folder).named_parameters())


NO_MPI = pytest.mark.skipif(shutil.which("mpirun") is None, reason="no MPI installed (mpirun)")


@pytest.mark.parametrize("mode", ["--cpu", "--multi_gpu", pytest.param("mpirun", marks=NO_MPI)])
def test_dpo_two_processes_make_the_same_update_as_one(tiny_pairs, capsys, mode):
    args = ["train", "dpo", "--data", "pairs.jsonl", "--model", "tiny", "--device", "cpu", "--optimizer", "sgd",
            "--lr", "1e-2", "--batch-size", "5", "--micro-batch-size", "2", "--json"]
    os.chdir(tiny_pairs)
    one = json.loads(one_process(["--db", "one.db", *args, "--output", "one"], capsys))
    two = json.loads(launch(["--db", "two.db", *args, "--output", "two"], tiny_pairs, mode))
    assert two["steps"] == one["steps"] == 3  # 11 pairs in steps of 5, 5, 1: the last has fewer pairs than ranks
    assert [e["loss"] for e in two["logs"]] == pytest.approx([e["loss"] for e in one["logs"]], abs=1e-6)
    assert two["delta_logp_chosen"] == pytest.approx(one["delta_logp_chosen"], abs=1e-5)
    base, a, b = _weights(tiny_pairs / "tiny"), _weights(tiny_pairs / "one"), _weights(tiny_pairs / "two")
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-6  # same update, to fp32 summation order
    assert max((a[n] - base[n]).abs().max().item() for n in a) > 1e-4  # and the update is not nothing
    from skillweave.store import Store

    assert len(list(Store(str(tiny_pairs / "two.db")).db["runs"].rows)) == 1  # one process records


def test_ches_two_processes_give_the_same_scores(tiny_pairs, capsys):
    args = ["ches", "score", "--data", "pairs.jsonl", "--model", "tiny", "--device", "cpu", "--batch-size", "3",
            "--json"]
    os.chdir(tiny_pairs)
    one = json.loads(one_process(["--db", "one.db", *args], capsys))
    two = json.loads(launch(["--db", "two.db", *args], tiny_pairs))
    assert [r["item_id"] for r in two["scores"]] == [r["item_id"] for r in one["scores"]]
    for key in ("ches", "ches_norm", "last_inner", "neg_ned"):
        assert [r[key] for r in two["scores"]] == pytest.approx([r[key] for r in one["scores"]], rel=1e-5, abs=1e-5)


def test_less_features_two_processes_equal_one(tmp_path, capsys):
    from test_less_pipeline import LESS_ARGS, _task_rows, _write

    pool = _write(tmp_path / "pool.jsonl", _task_rows(8))
    targets = [{**r, "subtask": "add"} for r in _task_rows(4, seed=7) if r["task"] == "add"][:2]
    target_path = _write(tmp_path / "targets.jsonl", targets)
    args = ["select", "less", "--pool", pool, "--targets", target_path, *LESS_ARGS, "--device", "cpu",
            "--chunk-examples", "10", "--feature-batch-size", "3", "--json"]
    os.chdir(tmp_path)
    one = json.loads(one_process(["--db", "one.db", *args, "--out", "one"], capsys))
    shutil.copytree(tmp_path / "one" / "warmup", tmp_path / "two" / "warmup")  # the same warmup checkpoints
    two = json.loads(launch(["--db", "two.db", *args, "--out", "two"], tmp_path))
    assert two["n_selected"] == one["n_selected"]
    assert (tmp_path / two["top_path"]).read_text() == (tmp_path / one["top_path"]).read_text()  # same rows
    for side in ("pool-ckpt1-adam", "pool-ckpt2-adam"):
        a = torch.load(tmp_path / "one" / side / "dim128" / "all_unormalized.pt")
        b = torch.load(tmp_path / "two" / side / "dim128" / "all_unormalized.pt")
        # each process projects its own batches' rows (a projection buffer per process), so the products' widths
        # and their float rounding differ from one process: ~1e-6 of a row's norm, then both are stored in fp16
        # (an fp16 rounding may flip: up to ~1e-3 of a row's norm, FP16_ROW_TOLERANCE); a wrong shard would be O(1)
        a, b = a.float(), b.float()
        assert ((a - b).norm(dim=1) / a.norm(dim=1)).max() < 1e-3


def test_sft_trains_under_ddp_and_writes_one_checkpoint(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=5)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    rows = [{"prompt": f"{a} {b}", "completion": f"{b} {a}"} for a in "abcd" for b in "efgh"]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = launch(["--db", "s.db", "train", "sft", "--data", "sft.jsonl", "--model", "tiny", "--device", "cpu",
                  "--max-steps", "2", "--lr", "1e-3", "--output", "ckpt", "--json"], tmp_path)
    summary = json.loads(out)
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    assert (tmp_path / "ckpt" / "skillweave_training.json").exists()
