"""FSDP for full fine-tuning: `train dpo` shards its policy with torch's FSDP2 `fully_shard`; `train sft` loads the
model sharded by transformers (`DistributedConfig`, also FSDP2) and trains it in `Trainer`.

Design choices
- DPO's loop is our own, so it shards the policy itself with `torch.distributed.fsdp.fully_shard` (FSDP2, the
  function accelerate's FSDP2 plugin calls): every decoder layer (the model's `_no_split_modules` classes) is one
  FSDP unit, the rest (embeddings, final norm, LM head) the root unit. Parameters, gradients and optimizer state
  are split across the processes; each forward all-gathers one layer at a time. This runs on the CPU over gloo
  as well as on GPUs over NCCL, so it is tested on the CPU (tests/test_fsdp.py).
- The reference model is neither sharded nor replicated: it is the initial policy, whose log-probabilities DPO
  computes once before the first step (with the sharded policy), so no second model is held anywhere.
- Gradients: FSDP reduce-scatters them; the divide factor is set to 1, so each shard holds the *sum* of the
  processes' gradients, each process having weighted its loss by its share of the step's pairs, exactly as the
  DDP path sums them. The update is the one-process update (to float summation order).
- Collectives need every process to run the same number of forward passes: `pad_passes` tells a process how many
  extra (discarded, zero-weighted) passes to run when its share of a step or of a log-prob pass is shorter.
- The whole model is loaded on every process and then sharded (simple, and what a 7-8B model in bf16 allows on
  one 80 GB GPU); the saved checkpoint is the full state dict gathered to rank 0 (`get_model_state_dict` with
  `full_state_dict=True`), written as a plain transformers folder.
- SFT runs in transformers' `Trainer`. Its accelerate FSDP plugin (`TrainingArguments(fsdp=...)`) is not used:
  accelerate turns FSDP off when the processes run on the CPU (`DistributedType.MULTI_CPU`, DDP instead), so it
  could never be tested here. Instead the model is sharded at load time by transformers itself,
  `from_pretrained(..., distributed_config=DistributedConfig(fsdp_size=N))` (FSDP2 `fully_shard` per the model's
  FSDP plan: embeddings and each decoder layer resharded after forward, final norm and LM head kept gathered),
  and `Trainer` has a path for such a model (no DDP wrap, no second sharding, gradient reduction deferred over
  accumulation steps, a gathered `save_pretrained`). transformers takes the device type from torch's accelerator
  (CUDA and NCCL on a GPU machine, the CPU and gloo otherwise), so CPU processes and GPUs run the same code.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from skillweave.errors import ConfigError


def check_fsdp(*, lora: bool, world: int, generates: str | None = None) -> None:
    """The settings FSDP needs: several processes and full fine-tuning, and no option that generates text with
    the sharded model (`generates`: the option given, e.g. "--eval-data", or None)."""
    if lora:
        raise ConfigError("--fsdp shards full fine-tuning; with --lora the base weights are frozen and DDP "
                          "(no --fsdp) is the lighter choice")
    if world < 2:
        raise ConfigError("--fsdp needs several processes: run under `accelerate launch --num_processes N` "
                          "(see docs/trainers-sft-dpo-ches.md#several-gpus)")
    if generates:
        raise ConfigError(f"{generates} generates text, which the sharded model does not do here; evaluate the "
                          "saved checkpoint instead")


def layer_classes(model: Any) -> set[str]:
    """Class names of the model's decoder layers (transformers' `_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ConfigError(f"--fsdp: {type(model).__name__} names no decoder-layer class (_no_split_modules)")
    return names


def shard_policy(model: Any) -> Any:
    """Shard `model` in place with FSDP2: one unit per decoder layer, the root for the rest; gradients summed."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from skillweave.trainers.devices import model_device, process_info

    world = process_info()[1]
    device = model_device(model)
    mesh = init_device_mesh(device.type, (world,))
    classes = layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in [*layers, model]:
        module.set_gradient_divide_factor(1.0)  # sum the processes' size-weighted gradients (not their mean)
        module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def pad_passes(n_items: int, per_pass: int, world: int, mine: int) -> int:
    """Extra forward passes this process runs so that every process runs as many as the busiest one.

    Items are dealt round-robin (`devices.shard`), so the busiest process has ceil(n_items / world) of them.
    """
    if per_pass < 1:
        return 0
    most = math.ceil(math.ceil(n_items / world) / per_pass)
    return most - math.ceil(mine / per_pass)


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The unsharded state dict on the CPU in rank 0 (empty elsewhere); every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def sharded_load_config(device: torch.device) -> Any:
    """transformers' `DistributedConfig` that shards a model with FSDP2 over this launch's processes at load time.

    transformers puts the shards on torch's accelerator (CUDA when torch has it, else the CPU); a run whose
    processes train elsewhere (`--device cpu` on a machine with CUDA) would mix devices, so it is refused.
    """
    from transformers.distributed import DistributedConfig

    from skillweave.trainers.devices import process_info

    if os.environ.get("ACCELERATE_USE_FSDP", "").strip().lower() in ("1", "true", "yes"):
        raise ConfigError("--fsdp shards the model when it is loaded; drop accelerate's --use_fsdp (or the FSDP "
                          "settings of the accelerate config) so that it is not sharded a second time")
    shard_type = accelerator_type()
    if device.type != shard_type:
        raise ConfigError(f"train sft --fsdp shards on torch's accelerator ({shard_type}), but this process trains on "
                          f"{device.type}; drop --device {device.type} (or --cpu) or run without --fsdp")
    return DistributedConfig(fsdp_size=process_info()[1])


def shard_fraction(model: Any) -> float:
    """The fraction of the model's parameter elements this process holds (1.0 unsharded, about 1/N with FSDP)."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return held / max(sum(p.numel() for p in params), 1)


def accelerator_type() -> str:
    """The device type transformers' sharded loading uses: the accelerator torch was built for (CUDA in a CUDA
    build, even with no GPU present), the CPU without one; MPS falls back to the CPU as transformers does."""
    accelerator = torch.accelerator.current_accelerator()
    return "cpu" if accelerator is None or accelerator.type == "mps" else accelerator.type
