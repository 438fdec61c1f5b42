"""DPO (and IPO / cDPO) on preference pairs with an optional CHES~ pre-filter and likelihood-displacement logging
(Rafailov et al. 2023; Razin et al. ICLR 2025; docs/methods.md#ches-filtering, docs/methods.md#dpo).

Design choices
- A small hand-written loop rather than TRL's DPOTrainer: the CHES reference setup needs RMSprop, an SFT term,
  full-batch or tiny-batch steps and the *before/after* mean ln pi(y+) on the same pairs, and the loop keeps all of
  that readable in one file. It mirrors TRL's shape: [prompt+chosen ; prompt+rejected] in one 2B batch, a
  completion mask, selective log-softmax of shifted logits, **sum** over response tokens (incl. EOS).
- Frozen reference: the reference is the initial policy, so its log-probabilities are computed once before the
  first step (TRL's `precompute_ref_log_probs`); no second model is held in memory. They double as the "before"
  values for likelihood displacement. With `lora=True` the policy is the base model plus fresh peft adapters
  (B = 0), so that reference is the base model, as TRL's PEFT path (adapter disabled) has it; the saved folder
  has the adapters merged in. The reference log-probs stay on the model's device; dropout is turned off (as TRL).
- Log-probs are gather − logsumexp in fp32, chunked over the sequence (`devices.token_logps`), never a full fp32
  log-softmax over the vocabulary. Under `accelerate launch` each process takes its share of every step's pairs
  and the gradients are summed across processes before the step, so the update equals one process's.
- Loss (per pair, mean over the batch), h = (s_w - s_l) - (s_w^ref - s_l^ref):
  sigmoid  -log sig(beta h);  ipo  (h - 1/(2 beta))^2 (beta plays tau);
  label smoothing eps (cDPO)  (1-eps)(-log sig(beta h)) + eps(-log sig(-beta h));  plus c_sft * (-mean s_w).
- CHES filtering runs before training as a dataset filter scored with the initial policy; kept/dropped counts and
  pairs lost to truncation are logged, never silent.
- Logged: loss, rewards/{chosen,rejected,margins,accuracies}, logps/{chosen,rejected} per step; at the end the
  change of mean ln pi(y+) and ln pi(y-) (falling logps/chosen = displacement), reward accuracy and policy
  preference accuracy (ln pi(y+) > ln pi(y-)) before and after.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from skillweave.errors import ConfigError
from skillweave.trainers.checkpoint_rows import record_checkpoint
from skillweave.trainers.ches import encode_pairs, keep_lowest, load_pairs, save_scores, score_pairs
from skillweave.trainers.devices import (
    disable_dropout,
    distributed,
    fp16_mixed_precision,
    is_main_process,
    model_device,
    process_info,
    setup,
    shard,
    token_logps,
)
from skillweave.trainers.fsdp import (
    check_fsdp,
    full_state_dict,
    is_sharded,
    pad_passes,
    shard_policy,
)
from skillweave.trainers.models import apply_lora, plain_model
from skillweave.trainers.settings import DPOConfig

LOSS_TYPES = ("sigmoid", "ipo")
OPTIMIZERS = ("rmsprop", "adamw", "sgd")


def _batch(sequences: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and response-token mask for the shifted targets."""
    width = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    completion = torch.zeros_like(ids, dtype=torch.bool)
    for row, (seq, prompt_len) in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        attention[row, :len(seq)] = 1
        completion[row, prompt_len:len(seq)] = True
    return ids, attention, completion


def sequence_logps(model: Any, sequences: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """ln pi(y|x) = sum of response-token log-probs (incl. EOS) for each (ids, prompt_len); differentiable."""
    device = next(model.parameters()).device
    ids, attention, completion = (t.to(device) for t in _batch(sequences, pad_id))
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    # gather minus logsumexp in fp32, chunked over the sequence (no full fp32 log-softmax over the vocabulary)
    return (token_logps(logits, ids[:, 1:]) * completion[:, 1:]).sum(-1)


@torch.no_grad()
def all_logps(model: Any, sequences: list[tuple[list[int], int]], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """Summed response log-probs of every sequence, on the model's device (fp32).

    Under several processes each computes its share of the sequences and the rows are summed across them.
    """
    model.eval()
    rank, world = process_info()
    mine = shard(list(range(len(sequences))), rank, world)
    values = [sequence_logps(model, [sequences[i] for i in mine[b:b + batch_size]], pad_id)
              for b in range(0, len(mine), batch_size)]
    if sequences and is_sharded(model):  # FSDP: as many forward passes as the busiest process (results unused)
        for _ in range(pad_passes(len(sequences), batch_size, world, len(mine))):
            sequence_logps(model, sequences[:1], pad_id)
        model.reshard()  # the root unit stays gathered after a no-grad forward; its parameters must be the shards
    return _rows_across_processes(torch.cat(values) if values else None, mine, len(sequences), model_device(model))


def _rows_across_processes(values: torch.Tensor | None, rows: list[int], n: int, device: torch.device) -> torch.Tensor:
    """A length-n vector with `values` at `rows`, the other processes' rows filled in (one all-reduce sum)."""
    full = torch.zeros(n, dtype=torch.float32, device=device)
    if values is not None and rows:
        full[torch.tensor(rows, device=device)] = values.float()
    if distributed():
        from accelerate.utils import reduce

        full = reduce(full, reduction="sum")
    return full


def _sum_scalar(value: float, device: torch.device) -> float:
    from accelerate.utils import reduce

    return float(reduce(torch.tensor([value], dtype=torch.float64, device=device), reduction="sum")[0])


def _sum_gradients_across_processes(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of all processes into every process (one flat all-reduce, as DDP does per bucket)."""
    from accelerate.utils import reduce

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
             beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0, c_sft: float = 0.0
             ) -> torch.Tensor:
    """Mean preference loss over the batch (docs/methods.md#dpo), inputs are summed sequence log-probs."""
    h = (chosen - rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        losses = (1 - label_smoothing) * -F.logsigmoid(beta * h) + label_smoothing * -F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ConfigError(f"unknown loss type '{loss_type}'; expected one of {', '.join(LOSS_TYPES)}")
    return losses.mean() + c_sft * -chosen.mean()


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ConfigError(f"unknown optimizer '{name}'; expected one of {', '.join(OPTIMIZERS)}")


def _summary(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> dict[str, float]:
    margins = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return {"logps/chosen": float(chosen.mean()), "logps/rejected": float(rejected.mean()),
            "rewards/chosen": float(beta * (chosen - ref_chosen).mean()),
            "rewards/rejected": float(beta * (rejected - ref_rejected).mean()),
            "rewards/margins": float(margins.mean()), "rewards/accuracies": float((margins > 0).float().mean())}


def train_dpo(model: Any, tokenizer: Any, chosen: list[tuple[list[int], int]], rejected: list[tuple[list[int], int]],
              config: DPOConfig) -> dict[str, Any]:
    """Train `model` in place on encoded pairs; returns logs, before/after log-probs and displacement."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{config.optimizer}'; expected one of {', '.join(OPTIMIZERS)}")
    if config.loss_type not in LOSS_TYPES:
        raise ConfigError(f"unknown loss type '{config.loss_type}'; expected one of {', '.join(LOSS_TYPES)}")
    if config.micro_batch_size is not None and config.micro_batch_size < 1:
        raise ConfigError(f"micro batch size must be at least 1, got {config.micro_batch_size}")
    torch.manual_seed(config.seed)
    disable_dropout(model)  # as TRL: dropout would make the policy's log-probs differ from the reference's
    autocast, scaler = fp16_mixed_precision(model, config.dtype)  # fp16: fp32 weights, autocast, loss scaling
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with autocast():
        ref_chosen = all_logps(model, chosen, pad_id)  # frozen reference = the initial policy, on the model's device
        ref_rejected = all_logps(model, rejected, pad_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config.optimizer, params, config.lr)
    if config.gradient_checkpointing:
        from skillweave.trainers.devices import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    rank, world = process_info()
    device = model_device(model)
    sharded = is_sharded(model)  # FSDP sums the gradients in its reduce-scatter (trainers/fsdp.py)
    rng = random.Random(config.seed)
    logs: list[dict[str, float]] = []
    step = 0
    for epoch in range(config.epochs):
        order = list(range(len(chosen)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            if config.max_steps is not None and step >= config.max_steps:
                break
            idx = order[start:start + config.batch_size]
            mine = shard(idx, rank, world)  # this process's pairs of the step (all of them with one process)
            model.train()
            optimizer.zero_grad()
            loss, pol_c, pol_r = 0.0, [], []
            micro = config.micro_batch_size or max(len(mine), 1)
            for part in (mine[i:i + micro] for i in range(0, len(mine), micro)):
                with autocast():
                    logps = sequence_logps(model, [chosen[i] for i in part] + [rejected[i] for i in part], pad_id)
                part_loss = dpo_loss(logps[:len(part)], logps[len(part):], ref_chosen[part], ref_rejected[part],
                                     beta=config.beta, loss_type=config.loss_type,
                                     label_smoothing=config.label_smoothing, c_sft=config.c_sft) * (len(part) / len(idx))
                scaler.scale(part_loss).backward()  # the batch mean is the size-weighted sum of the micro-batch means
                loss += part_loss.item()
                pol_c.append(logps[:len(part)].detach())
                pol_r.append(logps[len(part):].detach())
            if sharded:  # FSDP: every process runs as many forward/backward passes; these add zero gradient
                per_pass = config.micro_batch_size or math.ceil(len(idx) / world)
                for _ in range(pad_passes(len(idx), per_pass, world, len(mine))):
                    (sequence_logps(model, [chosen[idx[0]]], pad_id).sum() * 0.0).backward()
            if world > 1:  # the step's gradient is the sum over processes of their size-weighted parts
                if not sharded:
                    _sum_gradients_across_processes(params)
                loss = _sum_scalar(loss, device)
            scaler.step(optimizer)  # optimizer.step(), unless fp16 gradients overflowed (then the scale drops)
            scaler.update()
            step += 1
            positions = {i: k for k, i in enumerate(idx)}
            batch_c = _rows_across_processes(torch.cat(pol_c) if pol_c else None, [positions[i] for i in mine],
                                             len(idx), device)
            batch_r = _rows_across_processes(torch.cat(pol_r) if pol_r else None, [positions[i] for i in mine],
                                             len(idx), device)
            logs.append({"step": step, "epoch": epoch, "loss": loss,
                         **_summary(batch_c, batch_r, ref_chosen[idx], ref_rejected[idx], config.beta)})
    with autocast():
        final_chosen = all_logps(model, chosen, pad_id)
        final_rejected = all_logps(model, rejected, pad_id)
    return {
        "steps": step, "logs": logs,
        "before": {"logps_chosen": ref_chosen.tolist(), "logps_rejected": ref_rejected.tolist()},
        "after": {"logps_chosen": final_chosen.tolist(), "logps_rejected": final_rejected.tolist()},
        "delta_logp_chosen": float((final_chosen - ref_chosen).mean()),
        "delta_logp_rejected": float((final_rejected - ref_rejected).mean()),
        "preference_accuracy_before": float((ref_chosen > ref_rejected).float().mean()),
        "preference_accuracy_after": float((final_chosen > final_rejected).float().mean()),
        "reward_accuracy_after": _summary(final_chosen, final_rejected, ref_chosen, ref_rejected,
                                          config.beta)["rewards/accuracies"],
        "final_loss": logs[-1]["loss"] if logs else None,
    }


def _refusal_rate(model: Any, tokenizer: Any, template: Any, config: DPOConfig) -> float:
    from skillweave.trainers.evaluate import evaluate, load_eval_rows

    safety, _ = load_eval_rows(config.eval_prompts or "")
    result = evaluate(model, tokenizer, template, safety_prompts=safety, max_new_tokens=config.eval_max_new_tokens)
    return result["metrics"]["refusal_rate"]


def run(config: DPOConfig) -> dict[str, Any]:
    """Load the policy and pairs, optionally keep the lowest-CHES~ fraction, train, save, record."""
    from skillweave.providers.local_model import resolve_model_path
    from skillweave.store import Store, stable_id
    from skillweave.trainers.models import load_model_and_tokenizer
    from skillweave.trainers.templates import get_template

    if config.ches_keep_lowest is not None:
        keep_lowest([], config.ches_keep_lowest)  # validate the fraction before loading anything
    device, dtype = setup(config.device, config.dtype)
    if config.fsdp:
        check_fsdp(lora=config.lora, world=process_info()[1], generates="--eval-prompts" if config.eval_prompts else None)
    # One process records and saves; the others open the store only to read pairs from it.
    store = Store(config.db) if config.db and (is_main_process() or config.store_run) else None
    pairs = load_pairs(config.data, store, config.store_run)
    store = store if is_main_process() else None
    model_path = str(resolve_model_path(config.model))
    model, tokenizer = load_model_and_tokenizer(config.model, device=device, dtype=dtype)
    template = get_template(config.template).bind(tokenizer)
    run_id = store.create_run("train-dpo", config.model_dump(), command="skillweave train dpo") if store else None
    try:
        result = _filter_and_train(model, tokenizer, pairs, template, config, store, run_id, model_path)
    except BaseException as exc:
        if store is not None and run_id is not None:
            store.set_run_status(run_id, "failed", error=str(exc)[:500])
        raise
    if store is not None and run_id is not None:
        metrics = {k: v for k, v in result.items() if k not in ("logs", "before", "after")}
        record_checkpoint(store, stable_id(run_id, "final"), run_id, method="dpo", path=config.output_dir,
                          base_model=model_path, step=result["steps"], train_template=template, metrics=metrics)
        store.set_run_status(run_id, "done")
    return result


def _filter_and_train(model: Any, tokenizer: Any, pairs: list, template: Any, config: DPOConfig, store: Any,
                      run_id: str | None, model_path: str) -> dict[str, Any]:
    from skillweave.store import jdump

    filter_log: dict[str, Any] = {"pairs": len(pairs)}
    if config.ches_keep_lowest is not None:
        scores = score_pairs(model, tokenizer, pairs, template=config.template, batch_size=config.ches_batch_size,
                             max_length=config.max_length)
        kept = keep_lowest(scores, config.ches_keep_lowest)
        if not kept:
            raise ConfigError("no pair could be CHES-scored (all lost to truncation or identical); raise --max-length")
        if store is not None:
            save_scores(store, scores, config.model, model_path, config.data or f"store:{config.store_run}", run_id)
        filter_log.update({"ches_scored": len(scores), "ches_kept": len(kept), "ches_dropped": len(scores) - len(kept),
                           "ches_norm_max_kept": max(r["ches_norm"] for r in kept)})
        pairs = [pairs[r["index"]] for r in sorted(kept, key=lambda r: r["index"])]
    chosen, rejected, survived = encode_pairs(tokenizer, pairs, config.template, config.max_length)
    filter_log.update({"trained_pairs": len(survived), "dropped_by_truncation": len(pairs) - len(survived)})
    if not survived:
        raise ConfigError("no pair left to train on after filtering/truncation; raise --max-length or keep more pairs")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    held_out = encode_pairs(tokenizer, load_pairs(config.eval_data), config.template, config.max_length) \
        if config.eval_data else None
    before_eval = [all_logps(model, side, pad_id) for side in held_out[:2]] if held_out else None
    refusal_before = _refusal_rate(model, tokenizer, template, config) if config.eval_prompts else None
    if config.lora:  # adapters start at B = 0, so the precomputed reference is the base model (TRL's PEFT path)
        torch.manual_seed(config.seed)  # the same adapter initialisation in every process
        model = apply_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                           targets=config.lora_targets)
    if config.fsdp:  # the reference log-probs are then computed by the sharded initial policy (trainers/fsdp.py)
        model = shard_policy(model)
    result = train_dpo(model, tokenizer, chosen, rejected, config)
    if held_out and before_eval:
        after_c, after_r = (all_logps(model, side, pad_id) for side in held_out[:2])
        result["eval"] = {"pairs": len(held_out[2]),
                          "delta_logp_chosen": float((after_c - before_eval[0]).mean()),
                          "delta_logp_rejected": float((after_r - before_eval[1]).mean()),
                          "preference_accuracy_before": float((before_eval[0] > before_eval[1]).float().mean()),
                          "preference_accuracy_after": float((after_c > after_r).float().mean())}
    if config.eval_prompts:
        result["refusal_rate_before"] = refusal_before
        result["refusal_rate_after"] = _refusal_rate(model, tokenizer, template, config)
    result.update({"filter": filter_log, "run_id": run_id, "template": template.record()})
    state = full_state_dict(model) if config.output_dir and config.fsdp else None  # a collective: every process
    if config.output_dir and is_main_process():
        out = Path(config.output_dir)
        model = plain_model(model)
        model.save_pretrained(out, **({"state_dict": state} if state is not None else {}))
        tokenizer.save_pretrained(out)
        (out / "skillweave_training.json").write_text(jdump({"method": "dpo", "config": config.model_dump(),
                                                               "templates": {"train": template.record()}}))
        result["output_dir"] = str(out)
    return result
