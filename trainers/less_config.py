"""`LessConfig`: every setting of a LESS run, with its help text (the `select` CLI is generated from it).

Kept apart from `trainers.less` so that building the CLI does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skillweave.errors import ConfigError


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class LessConfig:
    pool: str = _f("", "Candidate pool, JSONL or a JSON list (messages, prompt/completion, instruction/response or "
                       "Alpaca rows; optional item_id). Leave empty with pool_run.")
    pool_run: str = _f("", "Read the pool from this store run instead of a file (the rows `skillweave export RUN "
                           "--shape alpaca` writes).")
    targets: str = _f("", "Target examples JSONL (same shapes); an optional `subtask` field groups them "
                          "(contiguous, equal-sized groups).")
    model: str = _f("local", "'local' (embedded SmolLM2-135M-Instruct), a local HF model folder, or 'tiny' "
                             "(random-init model over the data's words; tests).")
    out: str = _f("", "Folder for warmup checkpoints, the datastore and selections (default ./grads/<name>).")
    name: str = _f("", "Pool name used in datastore paths (default: pool file stem or run id).")
    warmup_fraction: float = _f(0.05, "Fraction of the pool used for the LoRA warmup.")
    warmup_seed: int = _f(42, "Seed of the warmup subset and of training.")
    epochs: int = _f(4, "Warmup epochs; one checkpoint per epoch.")
    learning_rate: float = _f(2e-5, "Warmup peak learning rate (linear warmup then linear decay).")
    warmup_ratio: float = _f(0.03, "Fraction of warmup steps spent ramping the learning rate up.")
    batch_size: int = _f(4, "Warmup per-step batch size.")
    grad_accum: int = _f(1, "Warmup gradient accumulation steps (reference: 128 effective).")
    lora_r: int = _f(8, "LoRA rank (reference 128).")
    lora_alpha: int = _f(32, "LoRA alpha (reference 512).")
    lora_dropout: float = _f(0.1, "LoRA dropout during warmup (features are taken in eval mode).")
    lora_targets: str = _f("q_proj,k_proj,v_proj,o_proj", "Comma-separated module names that get LoRA.")
    max_length: int = _f(2048, "Token limit per example (truncates the end).")
    dim: int = _f(8192, "Projection dimension d (multiple of 8).")
    projector_seed: int = _f(0, "Seed of the Rademacher projection (identical for pool, targets, checkpoints).")
    projector: str = _f("numpy", "How Π's signs are generated: numpy (PCG64 on the CPU, moved to the device; the same Π "
                                 "on every device, as earlier datastores) or device (torch's generator on the model's "
                                 "device: no host work, much faster on a GPU; the signs differ between CPU and CUDA).")
    adam_variant: str = _f("code", "code: m'/sqrt(v'+eps), no bias correction; paper: bias-corrected m/(sqrt(v)+eps).")
    aggregation: str = _f("code", "code: mean of per-target cosines within a subtask; paper: cosine with the "
                                  "subtask-mean gradient. Max across subtasks either way.")
    train_side: str = _f("adam", "adam (LESS) or sgd (InfSGD baseline: plain gradients for the pool too).")
    similarity: str = _f("cosine", "cosine (LESS) or inner (raw projected inner products; shows length bias).")
    fraction: float = _f(0.05, "Fraction of the pool to select (global top, at least one row).")
    feature_batch_size: int = _f(32, "Most examples per batched gradient pass.")
    feature_batch_tokens: int = _f(8192, "Most padded tokens (examples x longest) per batched gradient pass; "
                                         "bounds memory on long examples.")
    chunk_examples: int = _f(160, "Examples per datastore chunk file (resume granularity).")
    projection_buffer_mb: int = _f(0, "MiB of fp32 gradient rows gathered before one projection, so Π is read "
                                      "(or, when too large to keep, generated) once per buffer, not per feature "
                                      "batch; 0: 256. Memory grows with it, never with --chunk-examples. At "
                                      "reference-size LoRA (P = 134M, 512 MiB per row) 256 holds no row; on a GPU "
                                      "give e.g. 16384 (32 rows).")
    gradient_method: str = _f("batched", "batched (one padded pass + LoRA hooks) or loop (batch 1).")
    seed: int = _f(0, "Seed for the tiny model's initialisation.")
    device: str = _f("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
    dtype: str = _f("auto", "auto (bf16 on a CUDA device that supports it, else fp32), fp32, bf16 or fp16.")

    def validate(self) -> None:
        if bool(self.pool) == bool(self.pool_run):
            raise ConfigError("give exactly one of --pool FILE or --run RUN_ID for the candidate pool")
        if not self.targets:
            raise ConfigError("--targets FILE is required: the target examples to select for")
        for name, value, choices in (("adam_variant", self.adam_variant, ("code", "paper")),
                                     ("aggregation", self.aggregation, ("code", "paper")),
                                     ("train_side", self.train_side, ("adam", "sgd")),
                                     ("similarity", self.similarity, ("cosine", "inner")),
                                     ("gradient_method", self.gradient_method, ("batched", "loop")),
                                     ("projector", self.projector, ("numpy", "device"))):
            if value not in choices:
                raise ConfigError(f"--{name.replace('_', '-')} '{value}' is not one of {', '.join(choices)}")
        if self.projection_buffer_mb < 0:
            raise ConfigError(f"--projection-buffer-mb {self.projection_buffer_mb} must be 0 (the default) or more")
        for name in ("warmup_fraction", "fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must be in (0, 1]")
        for name in ("epochs", "batch_size", "grad_accum", "lora_r", "max_length", "feature_batch_size",
                     "feature_batch_tokens", "chunk_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
