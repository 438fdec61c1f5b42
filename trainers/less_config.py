"""`LessConfig`: every setting of a LESS run as a pydantic model, with its description, range and default (the
`select less|infsgd|rds` options are generated from it; unknown keys are errors).

Kept apart from `trainers.less` so that building the CLI does not import torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from skillweave.errors import ConfigError
from skillweave.trainers.settings import Device, Dtype, TrainerSettings


def _f(default: Any, help: str, **constraints: Any) -> Any:
    return Field(default, description=help, **constraints)


class LessConfig(TrainerSettings):
    """Settings of `skillweave select less` (and of `select infsgd` and `select rds`, which use a part of them).

    Ranges and choices are checked when the model is built; `validate()` checks what spans fields (one pool
    source, targets given) and runs just before the work starts.
    """

    cli_exclude: ClassVar[frozenset[str]] = frozenset()
    cli_flags: ClassVar[dict[str, str]] = {"pool_run": "--run"}

    pool: str = _f("", "Candidate pool, JSONL or a JSON list (messages, prompt/completion, instruction/response or "
                       "Alpaca rows; optional item_id). Leave empty with --run.")
    pool_run: str = _f("", "Read the pool from this store run instead of a file (the rows `skillweave export RUN "
                           "--shape alpaca` writes).")
    targets: str = _f("", "Target examples JSONL (same shapes); an optional `subtask` field groups them "
                          "(contiguous, equal-sized groups).")
    model: str = _f("local", "'local' (embedded SmolLM2-135M-Instruct), a local HF model folder, or 'tiny' "
                             "(random-init model over the data's words; tests).")
    out: str = _f("", "Folder for warmup checkpoints, the datastore and selections (default ./grads/<name>).")
    name: str = _f("", "Pool name used in datastore paths (default: pool file stem or run id).")
    warmup_fraction: float = _f(0.05, "Fraction of the pool used for the LoRA warmup.", gt=0, le=1)
    warmup_seed: int = _f(42, "Seed of the warmup subset and of training.")
    epochs: int = _f(4, "Warmup epochs; one checkpoint per epoch.", ge=1)
    learning_rate: float = _f(2e-5, "Warmup peak learning rate (linear warmup then linear decay).", gt=0)
    warmup_ratio: float = _f(0.03, "Fraction of warmup steps spent ramping the learning rate up.", ge=0, lt=1)
    batch_size: int = _f(4, "Warmup per-step batch size.", ge=1)
    grad_accum: int = _f(1, "Warmup gradient accumulation steps (reference: 128 effective).", ge=1)
    lora_r: int = _f(8, "LoRA rank (reference 128).", ge=1)
    lora_alpha: int = _f(32, "LoRA alpha (reference 512).", ge=1)
    lora_dropout: float = _f(0.1, "LoRA dropout during warmup (features are taken in eval mode).", ge=0, lt=1)
    lora_targets: str = _f("q_proj,k_proj,v_proj,o_proj", "Comma-separated module names that get LoRA.")
    max_length: int = _f(2048, "Token limit per example (truncates the end).", ge=1)
    dim: int = _f(8192, "Projection dimension d (multiple of 8).", ge=8, multiple_of=8)
    projector_seed: int = _f(0, "Seed of the Rademacher projection (identical for pool, targets, checkpoints).")
    projector: Literal["numpy", "device", "trak"] = _f(
        "numpy", "How Π's signs are generated: numpy (PCG64 on the CPU, moved to the device; the same Π on every "
                 "device, as earlier datastores), device (torch's generator on the model's device: no host work, "
                 "much faster on a GPU; the signs differ between CPU and CUDA) or trak (TRAK's projector as the "
                 "LESS reference calls it, the reference's features; needs `pip install traker==0.3.2`, and "
                 "fast_jl for its CUDA kernel).")
    adam_variant: Literal["code", "paper"] = _f(
        "code", "code: m'/sqrt(v'+eps), no bias correction; paper: bias-corrected m/(sqrt(v)+eps).")
    aggregation: Literal["code", "paper"] = _f(
        "code", "code: mean of per-target cosines within a subtask; paper: cosine with the subtask-mean gradient. "
                "Max across subtasks either way.")
    train_side: Literal["adam", "sgd"] = _f(
        "adam", "adam (LESS) or sgd (InfSGD baseline: plain gradients for the pool too).")
    similarity: Literal["cosine", "inner"] = _f(
        "cosine", "cosine (LESS) or inner (raw projected inner products; shows length bias).")
    fraction: float = _f(0.05, "Fraction of the pool to select (global top, at least one row).", gt=0, le=1)
    feature_batch_size: int = _f(32, "Most examples per batched gradient pass.", ge=1)
    feature_batch_tokens: int = _f(8192, "Most padded tokens (examples x longest) per batched gradient pass; "
                                         "bounds memory on long examples.", ge=1)
    chunk_examples: int = _f(160, "Examples per datastore chunk file (resume granularity).", ge=1)
    gradient_method: Literal["batched", "loop"] = _f(
        "batched", "batched (one padded pass + LoRA hooks) or loop (batch 1).")
    seed: int = _f(0, "Seed for the tiny model's initialisation.")
    device: Device = "auto"
    dtype: Dtype = "auto"
    projection_buffer_mb: int = _f(0, "MiB of gradient rows (fp32; fp16 with --projector trak) gathered before "
                                      "one projection, so Π is read "
                                      "(or, when too large to keep, generated) once per buffer, not per feature "
                                      "batch; 0: 256. Memory grows with it, never with --chunk-examples. At "
                                      "reference-size LoRA (P = 134M, 512 MiB per row) 256 holds no row; on a GPU "
                                      "give e.g. 16384 (32 rows).", ge=0)

    def validate(self) -> None:  # type: ignore[override]  # (pydantic's deprecated classmethod of that name)
        if bool(self.pool) == bool(self.pool_run):
            raise ConfigError("give exactly one of --pool FILE or --run RUN_ID for the candidate pool")
        if not self.targets:
            raise ConfigError("--targets FILE is required: the target examples to select for")


class RandomSelectionConfig(TrainerSettings):
    """Settings of `skillweave select random` (a seeded uniform sample of the pool)."""

    cli_exclude: ClassVar[frozenset[str]] = frozenset()
    cli_flags: ClassVar[dict[str, str]] = {"pool_run": "--run"}

    pool: str = _f("", "Candidate pool JSONL.")
    pool_run: str = _f("", "Read the pool from this store run's items instead.")
    fraction: float = _f(0.05, "Fraction of the pool to keep.", gt=0, le=1)
    seed: int = _f(0, "Sampling seed.")
    out: str = _f("", "Folder for the selection files (default ./grads/<name>).")
