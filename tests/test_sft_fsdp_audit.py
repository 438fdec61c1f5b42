"""Branches the trainers take only on CUDA, run on the CPU (the audit table in docs/trainers-sft-dpo-ches.md,
"Branches taken only on CUDA"): a faked `torch.cuda`, a faked model device, or the fact pinned that the CPU
takes another way. The other rows of that table point at tests elsewhere."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from skillweave.trainers import devices
from skillweave.trainers.models import tiny_model_and_tokenizer
from tests.test_multiprocess import WORDS

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    pass


def test_processes_on_a_cuda_machine_join_over_the_gpu_unless_the_cpu_is_asked(monkeypatch):
    """devices.accelerator: `Accelerator(cpu=False)` (each process its GPU, NCCL) only where CUDA is available and
    neither `--device cpu` nor `accelerate launch --cpu` asked for the CPU."""
    import accelerate

    made: list[bool] = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda cpu=False: made.append(cpu) or "acc")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.delenv("SKILLWEAVE_CPU_LAUNCH", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.accelerator("auto") == "acc" and devices.accelerator("cuda") == "acc"
    devices.accelerator("cpu")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    devices.accelerator("auto")
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    devices.accelerator("auto")
    assert made == [False, False, True, True, True]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert devices.accelerator("auto") is None and len(made) == 5  # one process: no process group at all


def test_less_warmup_on_cuda_makes_the_model_device_current_and_does_not_force_the_cpu(monkeypatch, tmp_path):
    """trainers/less.py warmup: `torch.cuda.set_device` and `use_cpu=False` for a model on a GPU."""
    import sys

    from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: F401  (as conftest.training_arguments)

    from skillweave.trainers.less import add_lora, warmup
    from skillweave.trainers.less_config import LessConfig

    calls, seen = [], {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(devices, "model_device", lambda model: torch.device("cuda", 1))
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(sys.modules["transformers"], "TrainingArguments", capture)
    config = LessConfig(pool="p", targets="t")
    model, _ = tiny_model_and_tokenizer(WORDS, seed=1)
    model = add_lora(model, config)
    encoded = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]} for _ in range(4)]
    with pytest.raises(Stop):
        warmup(model, None, encoded, config, tmp_path)
    assert calls == [torch.device("cuda", 1)] and seen["use_cpu"] is False


def _sft_fp32_then_fp16(tmp_path, capsys, between=lambda: None) -> dict[str, list[float]]:
    """Three SFT steps on a tiny model in fp32, then in fp16 (checkpoints in tmp_path/<dtype>): each run's losses;
    `between()` runs before each."""
    from skillweave.cli import main

    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=5)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    rows = [{"prompt": "a b", "completion": " ".join("cdefg"[: 1 + i % 4])} for i in range(6)]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    losses = {}
    for dtype in ("fp32", "fp16"):
        between()
        main(["--db", str(tmp_path / "s.db"), "train", "sft", "--data", str(tmp_path / "sft.jsonl"), "--model",
              str(tmp_path / "tiny"), "--device", "cpu", "--dtype", dtype, "--max-steps", "3", "--batch-size", "3",
              "--lr", "1e-2", "--warmup-ratio", "0", "--output", str(tmp_path / dtype), "--json"])
        losses[dtype] = json.loads(capsys.readouterr().out)["losses"]
    return losses


def test_sft_fp16_on_the_cpu_trains_as_fp32_because_accelerate_mixes_precision_on_gpus_only(tmp_path, capsys):
    """`Trainer(fp16=True)` hands fp16 to accelerate, which turns on autocast and the loss scale only for a device
    other than the CPU; on the CPU `--dtype fp16` therefore trains the fp32 master weights in fp32, step for step.
    (DPO's fp16 loop uses torch's autocast and GradScaler itself, which do run on the CPU: test_trainer_audit.)"""
    losses = _sft_fp32_then_fp16(tmp_path, capsys)
    assert losses["fp16"] == losses["fp32"] and len(losses["fp32"]) == 3 and losses["fp32"][0] != losses["fp32"][-1]



def test_sft_fp16_takes_accelerates_gpu_mixed_precision_path_when_it_is_turned_on(tmp_path, capsys, monkeypatch):
    """The path `train sft --dtype fp16` takes on a GPU, run on the CPU: accelerate's `Accelerator` is made to do
    what it does for a CUDA device (native amp: the model's forward under fp16 autocast, a GradScaler around
    backward, unscaled before clipping). Pins that SFT's fp16 wiring (fp32 master weights, `Trainer(fp16=True)`)
    trains through it: every step's scaled loss goes through the scaler, losses are close to fp32 but not equal
    (the forward ran in fp16), and the saved weights are fp32."""
    import accelerate


    used = {"scaled": 0, "stepped": 0}
    real_init = accelerate.Accelerator.__init__

    class CountingScaler(torch.amp.GradScaler):
        def scale(self, outputs):
            used["scaled"] += 1
            return super().scale(outputs)

        def step(self, optimizer, *args, **kwargs):
            used["stepped"] += 1
            return super().step(optimizer, *args, **kwargs)

    def init_as_on_a_gpu(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self.state.mixed_precision == "fp16" and self.device.type == "cpu":  # accelerate skips fp16 on the CPU
            self.native_amp, self.scaler = True, CountingScaler("cpu")

    monkeypatch.setattr(accelerate.Accelerator, "__init__", init_as_on_a_gpu)
    counts = []
    losses = _sft_fp32_then_fp16(tmp_path, capsys, between=lambda: counts.append(dict(used)))
    counts.append(dict(used))
    fp32, fp16 = losses["fp32"], losses["fp16"]
    assert counts == [{"scaled": 0, "stepped": 0}] * 2 + [{"scaled": 3, "stepped": 3}]  # fp32 run: no scaler
    assert fp16 != fp32 and all(abs(a - b) < 0.02 * abs(b) for a, b in zip(fp16, fp32, strict=True))
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "fp16" / "model.safetensors").values()} == {torch.float32}

def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_module", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_reads_the_gpu_peak_and_synchronises_around_each_timed_part(monkeypatch):
    gpu_check = _gpu_check()
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d: calls.append(("sync", d)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 3 * 2**30)
    gpu = torch.device("cuda", 0)
    out, seconds = gpu_check.timed(gpu, lambda: calls.append(("work", None)) or 7)
    assert out == 7 and seconds >= 0
    assert calls == [("sync", gpu), ("reset", gpu), ("work", None), ("sync", gpu)]  # the kernels finish inside
    assert gpu_check.peak_memory(gpu) == 3.0
    calls.clear()
    gpu_check.timed(torch.device("cpu"), lambda: None)
    assert calls == [] and gpu_check.peak_memory(torch.device("cpu")) > 0  # the CPU: peak RSS, no CUDA call

