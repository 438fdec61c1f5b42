"""Supervised fine-tuning with prompt-template discipline (PTST: tune without the safety prompt, test with it).

Design choices
- transformers' `Trainer` does the optimization (AdamW, cosine schedule with warmup, gradient accumulation); this
  file only turns examples into (input_ids, labels) with the loss on response tokens only (labels -100 on the
  prompt), and pads in a tiny collator. Full fine-tuning by default, LoRA via peft with `lora=True` (merged into the
  weights on save, so every checkpoint is a plain transformers folder that DPO, CHES and evaluation can load).
- Templates come from `trainers/templates.py`: `train_template` formats the training data, `eval_template` the
  evaluation prompts (defaults chat:vanilla -> chat:llama, i.e. PTST). Nothing else in optimization depends on the
  template. Both names and content hashes are saved next to the weights (`skillweave_training.json`) and in the
  store (`checkpoints`, `evaluations`).
- Recipe defaults follow the reference SFT recipe where it fits a CPU (lr 2e-5, cosine, 3% warmup, max_length
  1024; docs/methods.md#instruct-skillmix-sft, docs/methods.md#dpo); epochs and batch size are small by default
  and configurable.
- Truncation keeps the start; examples whose response is cut away entirely are dropped and counted, never silently.
- `--fsdp` (full fine-tuning, several processes): transformers loads the model already sharded with FSDP2
  (`fsdp.sharded_load_config`) and `Trainer` trains it as such; every process joins the gathered save, the main
  process writes. The same code runs on GPUs (NCCL) and on CPU processes (gloo), which is how it is tested.
- `--dtype fp16` loads fp32 weights (the master copy) and trains under `Trainer(fp16=True)`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from skillweave.errors import ConfigError
from skillweave.trainers.checkpoint_rows import record_checkpoint
from skillweave.trainers.data import SFTExample, encode_prompt_response, load_sft_examples
from skillweave.trainers.devices import (
    is_main_process,
    model_device,
    process_info,
    warmup_steps,
)
from skillweave.trainers.fsdp import check_fsdp, shard_fraction, sharded_load_config
from skillweave.trainers.models import apply_lora, plain_model
from skillweave.trainers.settings import SFTConfig
from skillweave.trainers.templates import PromptTemplate, get_template, load_system_prompts


def encode_sft(tokenizer: Any, examples: list[SFTExample], template: PromptTemplate, max_length: int
               ) -> tuple[list[dict[str, list[int]]], int]:
    """(features with input_ids/labels masked to the response, number of examples dropped by truncation)."""
    template = template.bind(tokenizer)
    add_special = not template.uses_tokenizer_chat_template
    features, dropped = [], 0
    for example in examples:
        prompt = template.render_prompt(example.instruction, example.input, tokenizer=tokenizer)
        encoded = encode_prompt_response(tokenizer, prompt, example.response, add_special_tokens=add_special,
                                         max_length=max_length)
        if encoded is None:
            dropped += 1
            continue
        ids, prompt_len = encoded
        features.append({"input_ids": ids, "labels": [-100] * prompt_len + ids[prompt_len:]})
    return features, dropped


class ResponseOnlyCollator:
    """Right-pads input_ids (pad id) and labels (-100) and builds the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in batch)
        pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(f["input_ids"], self.pad_id) for f in batch]),
            "labels": torch.tensor([pad(f["labels"], -100) for f in batch]),
            "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                            for f in batch]),
        }


def train_sft(model: Any, tokenizer: Any, examples: list[SFTExample], config: SFTConfig) -> dict[str, Any]:
    """Fine-tune `model` (in place, or its LoRA wrapper) on examples; returns the model, losses and counts."""
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    template = get_template(config.train_template).bind(tokenizer)
    features, dropped = encode_sft(tokenizer, examples, template, config.max_length)
    if not features:
        raise ConfigError(f"all {len(examples)} examples lost their response to truncation; raise --max-length")
    if config.lora:
        torch.manual_seed(config.seed)  # the same adapter initialisation in every process
        model = apply_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                           targets=config.lora_targets)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    # fp16: Trainer's mixed precision (fp32 master weights, fp16 autocast, loss scaling); pure fp16 AdamW loses
    # small updates and its eps (1e-8) is 0 in fp16 (devices.fp16_mixed_precision)
    fp16 = config.dtype == "fp16" or next(model.parameters()).dtype == torch.float16
    if fp16 and next(model.parameters()).dtype != torch.float32:
        model.float()
    sharded = getattr(model, "is_distributed_loading_by_transformers", False)  # FSDP2 at load time (run, --fsdp)
    if config.fsdp and not sharded:
        raise ConfigError("--fsdp: the model was not loaded sharded (load it with fsdp.sharded_load_config)")
    held = shard_fraction(model) if sharded else None  # this process's share of the weights
    if device.type == "cuda" and process_info()[1] == 1:
        torch.cuda.set_device(device)  # Trainer places the model on the current CUDA device
    warmup = warmup_steps(config.warmup_ratio, examples=len(features), batch_size=config.batch_size,
                          grad_accum=config.grad_accum, epochs=config.epochs, max_steps=config.max_steps,
                          world=process_info()[1])
    with tempfile.TemporaryDirectory(prefix="skillweave-sft-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr, num_train_epochs=config.epochs,
            max_steps=config.max_steps, lr_scheduler_type=config.scheduler, warmup_steps=warmup,
            logging_steps=1, save_strategy="no", report_to="none", use_cpu=device.type == "cpu",
            seed=config.seed, remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0, fp16=fp16,
            **({"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
               if config.gradient_checkpointing else {}),
        )
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            trainer = Trainer(model=model, args=args, train_dataset=features,
                              data_collator=ResponseOnlyCollator(pad_id))
            trainer.remove_callback(PrinterCallback)  # losses are returned, stdout stays clean for --json
            output = trainer.train()
        finally:
            hf_logging.set_verbosity(verbosity)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # the gradient norm of each step before clipping: Adam hides a gradient's scale, this shows it
    grad_norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    return {"model": model, "losses": losses, "grad_norms": grad_norms, "steps": trainer.state.global_step, "train_loss": output.training_loss,
            "examples": len(examples), "trained_examples": len(features), "dropped_by_truncation": dropped,
            **({"fsdp": {"processes": process_info()[1], "weights_held": held}} if sharded else {})}


def save_checkpoint(model: Any, tokenizer: Any, output_dir: str, config: SFTConfig, train_template: PromptTemplate,
                    eval_template: PromptTemplate) -> Any:
    """Save weights (LoRA merged), tokenizer and the templates used; returns the plain (merged) model.

    A model sharded at load time (`--fsdp`) gathers its full weights in `save_pretrained`, a collective: every
    process calls this, and only the main process writes."""
    from skillweave.store import jdump

    model = plain_model(model)
    out = Path(output_dir)
    model.save_pretrained(out, is_main_process=is_main_process())
    if not is_main_process():
        return model
    tokenizer.save_pretrained(out)
    (out / "skillweave_training.json").write_text(jdump({
        "method": "sft", "config": config.model_dump(),
        "templates": {"train": train_template.record(), "eval": eval_template.record()},
        "template_specs": {"train": train_template.spec(), "eval": eval_template.spec()}}))
    return model


def run(config: SFTConfig) -> dict[str, Any]:
    """Load data and model, fine-tune with the train template, save, evaluate with the eval template, record."""
    from skillweave.providers.local_model import resolve_model_path
    from skillweave.store import Store, stable_id
    from skillweave.trainers.evaluate import evaluate, load_eval_rows, save_evaluation
    from skillweave.trainers.models import load_model_and_tokenizer

    load_system_prompts(config.system_prompts)
    examples = load_sft_examples(config.data)
    model_path = str(resolve_model_path(config.model))
    from skillweave.trainers.devices import setup

    device, dtype = setup(config.device, config.dtype)
    if config.fsdp:
        check_fsdp(lora=config.lora, world=process_info()[1], generates="--eval-data" if config.eval_data else None)
    if dtype == torch.float16:  # fp16 trains fp32 master weights (train_sft): load them as stored, not fp16-rounded
        dtype = torch.float32
    model, tokenizer = load_model_and_tokenizer(config.model, device=device, dtype=dtype,
                                                distributed_config=sharded_load_config(device) if config.fsdp else None)
    train_template = get_template(config.train_template).bind(tokenizer)
    eval_template = get_template(config.eval_template).bind(tokenizer)
    store = Store(config.db) if config.db and is_main_process() else None  # one process records and saves
    run_id = store.create_run("train-sft", config.model_dump(), command="skillweave train sft") if store else None
    try:
        result = train_sft(model, tokenizer, examples, config)
        model = result.pop("model")
        if config.output_dir and (is_main_process() or config.fsdp):  # sharded: every process joins the gather
            model = save_checkpoint(model, tokenizer, config.output_dir, config, train_template, eval_template)
        summary: dict[str, Any] = {**result, "run_id": run_id, "output_dir": config.output_dir,
                                   "templates": {"train": train_template.record(), "eval": eval_template.record()}}
        checkpoint_id = stable_id(run_id, "final") if run_id else None
        if store is not None:
            record_checkpoint(store, checkpoint_id, run_id, method="sft", path=config.output_dir,
                              base_model=model_path, step=result["steps"], train_template=train_template,
                              eval_template=eval_template,
                              metrics={k: v for k, v in result.items() if k != "losses"})
        if config.eval_data:
            safety, qa = load_eval_rows(config.eval_data)
            evaluation = evaluate(model, tokenizer, eval_template, safety_prompts=safety, qa=qa,
                                  max_new_tokens=config.eval_max_new_tokens, temperature=config.eval_temperature)
            summary["evaluation"] = evaluation["metrics"]
            if store is not None:
                summary["evaluation_id"] = save_evaluation(store, evaluation, run_id=run_id,
                                                           checkpoint_id=checkpoint_id, model=config.output_dir or model_path)
        if store is not None:
            store.set_run_status(run_id, "done")
        return summary
    except BaseException as exc:
        if store is not None and run_id is not None:
            store.set_run_status(run_id, "failed", error=str(exc)[:500])
        raise
