"""Where and in what precision the trainers run: `--device`, `--dtype`, lean log-probabilities, dropout, processes.

Design choices
- `--device auto|cpu|cuda|cuda:N`: auto is CUDA (the current device) when available, else the CPU. Asking for
  CUDA on a machine without it is a usage error, never a silent fall-back to the CPU.
- `--dtype auto|fp32|bf16|fp16`: auto is bf16 on a CUDA device that supports it, else fp32. The model is loaded
  in that dtype and moved to that device once; everything a method keeps (reference log-probs, Adam moments,
  the projection, features, scores) is created on the model's device and moved to the CPU only to be saved.
- Log-probabilities of the target tokens are `logit[target] - logsumexp(logits)`, computed over the sequence in
  chunks in fp32; with gradients each chunk is checkpointed, so the fp32 copy of the logits is never held for
  the whole sequence (it is recomputed from the model-dtype logits in the backward pass). This equals the old
  full fp32 `log_softmax` + gather (tests/test_devices.py pins the tolerance). fp32 logits are not copied, so
  they are not checkpointed.
- Several processes come from `accelerate launch` (DDP through `accelerate.Accelerator`); `process_info()`
  reads the launcher's environment without importing accelerate when there is one process.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from skillweave.errors import ConfigError

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
DTYPE_HELP = "auto (bf16 on a CUDA device that supports it, else fp32), fp32, bf16 or fp16"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
LOGP_CHUNK = 256  # sequence positions per log-softmax chunk


def resolve_device(spec: str | None = "auto") -> torch.device:
    """The torch device for a `--device` value; a clear error when CUDA is asked for and missing."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}); use --device cpu or auto")
        index = torch.cuda.current_device() if spec == "cuda" else spec.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: expected cuda:N with N below {torch.cuda.device_count()}")
        return torch.device("cuda", int(index))
    raise ConfigError(f"--device '{spec}' is not one of auto, cpu, cuda, cuda:N")


def resolve_dtype(spec: str | None, device: torch.device) -> torch.dtype:
    """The torch dtype for a `--dtype` value on `device`."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if spec not in DTYPES:
        raise ConfigError(f"--dtype '{spec}' is not one of auto, fp32, bf16, fp16")
    return DTYPES[spec]


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def place(model: Any, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto") -> Any:
    """Move `model` to the resolved device and cast it to the resolved dtype (in place; returns it)."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
    return model.to(device=device, dtype=dtype)


def token_logps(logits: torch.Tensor, targets: torch.Tensor, chunk: int = LOGP_CHUNK) -> torch.Tensor:
    """log p(target) per position, [B, T] fp32, from logits [B, T, V] in any dtype, chunked over T.

    `logit[target] - logsumexp(logit)` in fp32 per chunk instead of a full fp32 log-softmax over the vocabulary.
    """
    parts = []
    for start in range(0, logits.shape[1], chunk):
        piece, wanted = logits[:, start:start + chunk], targets[:, start:start + chunk]
        if torch.is_grad_enabled() and piece.requires_grad and piece.dtype != torch.float32:
            # bf16/fp16 logits: recompute the chunk's fp32 copy in the backward instead of keeping it (fp32
            # logits need no copy, so nothing would be saved by checkpointing them)
            parts.append(torch.utils.checkpoint.checkpoint(_chunk_logps, piece, wanted, use_reentrant=False))
        else:
            parts.append(_chunk_logps(piece, wanted))
    if not parts:
        return logits.new_zeros(targets.shape, dtype=torch.float32)
    return torch.cat(parts, dim=1)


def _chunk_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    picked = torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def disable_dropout(model: Any) -> Any:
    """Set every dropout probability to 0 (as TRL does for DPO): the policy's log-probs are deterministic.

    Besides `nn.Dropout` modules (LoRA dropout among them) this zeroes the attention dropout that transformers'
    attention layers read from a float attribute.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
        config = getattr(module, "config", None)
        if isinstance(getattr(config, "attention_dropout", None), float):
            config.attention_dropout = 0.0
    return model


def fp16_mixed_precision(model: Any, dtype: str | None) -> tuple[Any, Any]:
    """(autocast context factory, GradScaler) for a hand-written training loop; both inert unless dtype is fp16.

    Pure fp16 training breaks: the optimizers' eps (1e-8) is 0 in fp16, so a parameter whose gradient and second
    moment are 0 gets 0/0 = NaN after the first step, and small updates round away. `--dtype fp16` therefore
    trains with fp32 master weights (the model is cast to fp32 here, in place), the forward pass under fp16
    autocast and a dynamic loss scale (`torch.amp.GradScaler`), as transformers' `Trainer(fp16=True)` does. bf16
    and fp32 train in the model's own dtype. A model already in fp16 is treated as `--dtype fp16`.
    """
    import contextlib

    device = model_device(model)
    enabled = (dtype or "").strip().lower() in ("fp16", "float16") or next(model.parameters()).dtype == torch.float16
    if enabled and next(model.parameters()).dtype != torch.float32:
        model.float()

    def autocast():
        return torch.autocast(device.type, dtype=torch.float16) if enabled else contextlib.nullcontext()

    return autocast, torch.amp.GradScaler(device.type, enabled=enabled)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (less memory, ~30% more compute); works for LoRA too."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


def process_info() -> tuple[int, int]:
    """(rank, world size) of this process under `accelerate launch`/torchrun (or mpirun), (0, 1) otherwise."""
    if "WORLD_SIZE" not in os.environ:
        from skillweave.trainers.launch import mpi_rank_world

        mpi = mpi_rank_world()  # `accelerate launch --cpu --mpirun_hostfile`: MPI's variables, no RANK
        if mpi is not None:
            return mpi
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def distributed() -> bool:
    return process_info()[1] > 1


def accelerator(device: str | None = "auto"):
    """An `accelerate.Accelerator` for a multi-process launch (it sets up the process group), else None.

    Under `accelerate launch --cpu` or `--device cpu` the device is the CPU; otherwise each process gets its local GPU.
    """
    if not distributed():
        return None
    from accelerate import Accelerator

    from skillweave.trainers.launch import cpu_launch

    cpu = (device or "auto") == "cpu" or cpu_launch() or not torch.cuda.is_available()
    return Accelerator(cpu=cpu)


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's share of `indices`: every world-th one starting at rank (balanced to within one)."""
    return indices[rank::world]


def setup(device: str | None = "auto", dtype: str | None = "auto") -> tuple[torch.device, torch.dtype]:
    """(device, dtype) for a trainer run; under `accelerate launch` the device is this process's device.

    The one process that `accelerate launch --cpu --num_processes N` starts becomes N processes here
    (trainers/launch.py); `--device auto` under `--cpu` is the CPU.
    """
    from skillweave.trainers.launch import cpu_launch, join_cpu_launch

    join_cpu_launch()
    if cpu_launch():
        if (device or "auto").strip().lower().startswith("cuda"):
            raise ConfigError(f"--device {device} under `accelerate launch --cpu`: drop one of the two")
        device = "cpu"
    acc = accelerator(device)
    target = acc.device if acc is not None else resolve_device(device)
    return target, resolve_dtype(dtype, target)


def is_main_process() -> bool:
    return process_info()[0] == 0


def warmup_steps(ratio: float, *, examples: int, batch_size: int, grad_accum: int, epochs: float,
                 max_steps: int = -1, world: int = 1) -> int:
    """Warmup as a whole number of optimizer steps: ceil(ratio x total steps), total counted as `Trainer` does.

    Passing the ratio itself as `warmup_steps` only means a ratio on transformers >= 5 (on 4.x 0.03 is read
    as 0.03 steps: no warmup at all), so the trainers pass this count, which both read the same way.
    """
    import math

    if not 0 <= ratio < 1:
        raise ConfigError(f"warmup ratio {ratio} must be in [0, 1)")
    if max_steps and max_steps > 0:
        total = max_steps
    else:
        batches = math.ceil(examples / max(batch_size * world, 1))
        total = math.ceil(epochs * max(math.ceil(batches / max(grad_accum, 1)), 1))
    return math.ceil(ratio * total)


def wait_for_everyone() -> None:
    """A barrier across the processes of a launch (nothing with one process)."""
    if distributed():
        from accelerate import PartialState

        PartialState().wait_for_everyone()
