"""FSDP for full fine-tuning in `train dpo` (torch's FSDP2 `fully_shard`) and the accelerate FSDP settings `train sft`
passes to transformers' `Trainer`.

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
- SFT runs in `Trainer`, which takes FSDP from `TrainingArguments(fsdp=..., fsdp_config=...)` and hands it to
  accelerate's FSDP plugin; accelerate turns FSDP off when the processes run on the CPU, so that path needs GPUs
  (`sft_fsdp_arguments` builds the arguments; tests check them, not a sharded SFT run).
"""

from __future__ import annotations

import math
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


def sft_fsdp_arguments(model: Any) -> dict[str, Any]:
    """`TrainingArguments` keywords for FSDP2 full sharding in `Trainer` (accelerate's FSDP plugin; GPUs only)."""
    return {"fsdp": "full_shard auto_wrap",
            "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": sorted(layer_classes(model)),
                            "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"}}
