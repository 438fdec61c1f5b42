"""CHES (centered hidden embedding similarity) and its length-normalized form, to find and drop DPO pairs that
cause likelihood displacement (Razin et al., ICLR 2025; docs/methods.md#ches).

Definitions (as written in docs/methods.md#ches-definitions)
- h_{x,y<k}: final-layer hidden state after the final norm (the input to the unembedding) at the position that
  predicts token y_k.  S(y) = sum_k h_{x,y<k}.
- CHES  = <S(y+), S(y-)> - ||S(y+)||^2
- CHES~ = <S(y+), S(y-)> / (|y+| |y-|) - ||S(y+)||^2 / |y+|^2     (used for filtering)

Design choices
- End-of-sequence convention (pinned in tests): a response y includes its terminating EOS token, so |y| = number
  of response tokens + 1. The batched code (convention A) appends EOS and sums the states at positions
  [prompt_len-1 .. len-2]; the per-example reference loop (convention B) appends no EOS and sums
  `hidden[prompt_len-1:]`. Both are the same |y| states; `test_ches.py` checks they agree to 1e-5.
- One forward per *sequence* (not per pair): the 2N chosen/rejected sequences are sorted by length and left-padded
  into batches with explicit position ids, so padding never changes a state.  The states come from the base
  decoder (`model.model`) so the vocabulary projection is skipped (it dominates SmolLM2's cost); a test checks
  that they equal `hidden_states[-1]` of the full model and reproduce its logits through `lm_head`.
- States summed in fp32 on the model's device (any --dtype), eval mode, no_grad; a PEFT model is unwrapped to find
  the base decoder. Under `accelerate launch` the length-sorted batches are split across processes.  Prompts are rendered with a registry template (default `model`: the
  tokenizer's chat template with the generation prompt; `add_special_tokens = not chat_template`).
- Baselines stored alongside: -NED (normalized edit distance of the response token ids without the appended EOS;
  higher = more similar) and
  the inner product of the last summed states (the ones predicting EOS).
- `keep_lowest(fraction)` keeps floor(fraction * n) pairs (at least 1) in ascending CHES~ order, ties by input
  order: 5% of 382 SORRY-Bench train pairs = the first 19, as in the reference.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers.data import (
    PreferencePair,
    encode_prompt_response,
    load_preference_pairs,
    load_store_pairs,
    read_records,
    write_jsonl,
)
from skillweave.trainers.devices import (
    is_main_process,
    model_device,
    process_info,
    setup,
    shard,
)
from skillweave.trainers.settings import CHESConfig
from skillweave.trainers.templates import get_template


# ---- pure formulas -----------------------------------------------------------------------------------
def ches_from_sums(s_plus: torch.Tensor, s_minus: torch.Tensor, n_plus: torch.Tensor, n_minus: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(CHES, CHES~) for rows of summed states S(y+), S(y-) [N, d] and lengths |y+|, |y-| [N] (fp32/fp64)."""
    cross = (s_plus * s_minus).sum(-1)
    self_sq = (s_plus * s_plus).sum(-1)
    n_plus, n_minus = n_plus.to(s_plus.dtype), n_minus.to(s_plus.dtype)
    return cross - self_sq, cross / (n_plus * n_minus) - self_sq / (n_plus * n_plus)


def normalized_edit_distance(a: list[int], b: list[int]) -> float:
    """Levenshtein distance of two token sequences divided by the longer length (0 = identical)."""
    if not a and not b:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, token in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != other))
        previous = current
    return previous[-1] / max(len(a), len(b))


# ---- hidden states ----------------------------------------------------------------------------------
def _decoder(model: Any) -> Any:
    """The base decoder whose last_hidden_state is post-norm (skips the vocabulary projection).

    A PEFT-wrapped model is unwrapped first (its LoRA layers stay in place inside the base model's decoder).
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return base if isinstance(base, torch.nn.Module) and base is not model else None


def _final_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    decoder = _decoder(model)
    if decoder is not None:
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return out.last_hidden_state.float()
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                output_hidden_states=True)
    return out.hidden_states[-1].float()


@torch.no_grad()
def hidden_sums(model: Any, sequences: list[tuple[list[int], int]], batch_size: int = 32, pad_id: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Convention A, batched: for each (ids ending in EOS, prompt_len) return S(y) [N,d], |y| [N], last state [N,d].

    Everything stays on the model's device (fp32). Under several processes each scores its share of the
    length-sorted sequences and the rows are summed across processes, so every process holds all of them.
    """
    model.eval()
    n = len(sequences)
    order = sorted(range(n), key=lambda i: -len(sequences[i][0]))
    rank, world = process_info()
    batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    device = model_device(model)
    lengths = torch.tensor([len(ids) - p for ids, p in sequences])
    sums = lasts = None
    for chunk in shard(batches, rank, world):
        width = max(len(sequences[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        select = torch.zeros((len(chunk), width), dtype=torch.float32)
        last_pos = []
        for row, i in enumerate(chunk):
            seq, prompt_len = sequences[i]
            offset = width - len(seq)  # left padding
            ids[row, offset:] = torch.tensor(seq)
            mask[row, offset:] = 1
            select[row, offset + prompt_len - 1: offset + len(seq) - 1] = 1.0  # positions predicting y_1..EOS
            last_pos.append(offset + len(seq) - 2)
        states = _final_states(model, ids.to(device), mask.to(device))
        if sums is None:
            sums = torch.zeros((n, states.shape[-1]), dtype=torch.float32, device=device)
            lasts = torch.zeros_like(sums)
        rows = torch.tensor(chunk, device=device)
        sums[rows] = (states * select.to(device).unsqueeze(-1)).sum(1)
        lasts[rows] = states[torch.arange(len(chunk), device=device), torch.tensor(last_pos, device=device)]
    if world > 1:
        from accelerate.utils import reduce

        if sums is None:  # fewer batches than processes: this one scored nothing but still takes part in the sum
            width = model.config.hidden_size
            sums = torch.zeros((n, width), dtype=torch.float32, device=device)
            lasts = torch.zeros_like(sums)
        sums, lasts = reduce(sums, reduction="sum"), reduce(lasts, reduction="sum")
    return sums, lengths, lasts  # type: ignore[return-value]


@torch.no_grad()
def hidden_sums_loop(model: Any, sequences: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Convention B, one example at a time (reference): no EOS fed, sum hidden[prompt_len-1:]."""
    model.eval()
    device = next(model.parameters()).device
    sums, lengths = [], []
    for ids, prompt_len in sequences:
        without_eos = torch.tensor([ids[:-1]], device=device)
        out = model(input_ids=without_eos, output_hidden_states=True)
        states = out.hidden_states[-1][0, prompt_len - 1:].float().cpu()
        sums.append(states.sum(0))
        lengths.append(states.shape[0])
    return torch.stack(sums), torch.tensor(lengths)


# ---- pairs ------------------------------------------------------------------------------------------
def encode_pairs(tokenizer: Any, pairs: list[PreferencePair], template_name: str = "model", max_length: int = 1024
                 ) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]], list[int]]:
    """Tokenized (chosen, rejected) sequences and the indices of pairs that survived truncation.

    Pairs whose chosen and rejected become identical after truncation, or lose all response tokens, are dropped
    and reported through the returned index list (the caller logs kept/dropped counts).
    """
    template = get_template(template_name).bind(tokenizer)
    add_special = not template.uses_tokenizer_chat_template
    chosen, rejected, kept = [], [], []
    for index, pair in enumerate(pairs):
        prompt = template.render_prompt(pair.prompt, tokenizer=tokenizer)
        c = encode_prompt_response(tokenizer, prompt, pair.chosen, add_special_tokens=add_special, max_length=max_length)
        r = encode_prompt_response(tokenizer, prompt, pair.rejected, add_special_tokens=add_special, max_length=max_length)
        if c is None or r is None or c[0] == r[0]:
            continue
        chosen.append(c)
        rejected.append(r)
        kept.append(index)
    return chosen, rejected, kept


def score_pairs(model: Any, tokenizer: Any, pairs: list[PreferencePair], *, template: str = "model",
                batch_size: int = 32, max_length: int = 1024) -> list[dict[str, Any]]:
    """One score record per scorable pair: item_id, index, ches, ches_norm, neg_ned, last_inner, lengths."""
    chosen, rejected, kept = encode_pairs(tokenizer, pairs, template, max_length)
    if not kept:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums, lengths, lasts = hidden_sums(model, chosen + rejected, batch_size, pad_id)
    n = len(kept)
    ches, ches_norm = ches_from_sums(sums[:n], sums[n:], lengths[:n].to(sums.device), lengths[n:].to(sums.device))
    last_inner = (lasts[:n] * lasts[n:]).sum(-1)
    ches, ches_norm, last_inner = ches.cpu(), ches_norm.cpu(), last_inner.cpu()  # results leave the device here
    eos = tokenizer.eos_token_id
    records = []
    for j, index in enumerate(kept):
        (c_ids, c_p), (r_ids, r_p) = chosen[j], rejected[j]
        records.append({
            "item_id": pairs[index].item_id, "index": index,
            "ches": float(ches[j]), "ches_norm": float(ches_norm[j]),
            "neg_ned": -normalized_edit_distance(_response_tokens(c_ids, c_p, eos), _response_tokens(r_ids, r_p, eos)),
            "last_inner": float(last_inner[j]),
            "len_chosen": int(lengths[j]), "len_rejected": int(lengths[n + j]),
        })
    return records


def _response_tokens(ids: list[int], prompt_len: int, eos: int | None) -> list[int]:
    """The response's own tokens: without the EOS the encoder appends (kept when truncation cut it away)."""
    response = ids[prompt_len:]
    return response[:-1] if response and eos is not None and response[-1] == eos else response


def keep_lowest(records: list[dict[str, Any]], fraction: float, key: str = "ches_norm") -> list[dict[str, Any]]:
    """The floor(fraction * n) records (at least one) with the lowest `key`, ascending, ties in input order."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"keep-lowest fraction {fraction} must be in (0, 1], e.g. 0.05 for the lowest 5%")
    if not records:
        return []
    count = max(1, math.floor(fraction * len(records) + 1e-9))
    return sorted(records, key=lambda r: (r[key], r["index"]))[:count]


def save_scores(store: Any, records: list[dict[str, Any]], model_spec: str, model_path: str, source: str,
                run_id: str | None = None) -> None:
    """Upsert one row per (pair, model) into `ches_scores`."""
    from skillweave.store import now, stable_id

    rows = [{"id": stable_id(r["item_id"], model_path), "pair_id": r["item_id"], "model": model_spec,
             "model_path": model_path, "source": source, "run_id": run_id, "created_at": now(),
             **{k: r[k] for k in ("ches", "ches_norm", "neg_ned", "last_inner", "len_chosen", "len_rejected")}}
            for r in records]
    with store.lock:
        store.db["ches_scores"].upsert_all(rows, pk="id")


def load_pairs(data: str | None, store: Any = None, store_run: str | None = None) -> list[PreferencePair]:
    if data:
        return load_preference_pairs(data)
    if store is not None and store_run:
        return load_store_pairs(store, store_run)
    raise UsageError("give the pairs with --data PAIRS.jsonl (prompt/chosen/rejected) or --store-run RUN_ID")


def run(config: CHESConfig) -> dict[str, Any]:
    """Score every pair, store the scores (if a store is given) and write the lowest fraction (if asked)."""
    from skillweave.providers.local_model import resolve_model_path
    from skillweave.store import Store
    from skillweave.trainers.models import load_model_and_tokenizer

    if config.output and config.keep_lowest is None:
        raise UsageError("--output writes the filtered set; give --keep-lowest FRACTION too")
    if config.keep_lowest is not None:
        keep_lowest([], config.keep_lowest)  # validate the fraction before loading anything
    device, dtype = setup(config.device, config.dtype)
    main = is_main_process()  # under several processes all score, one stores and writes
    store = Store(config.db) if config.db and (main or config.store_run) else None
    pairs = load_pairs(config.data, store, config.store_run)
    store = store if main else None
    model_path = str(resolve_model_path(config.model))
    model, tokenizer = load_model_and_tokenizer(config.model, device=device, dtype=dtype)
    started = time.perf_counter()
    records = score_pairs(model, tokenizer, pairs, template=config.template, batch_size=config.batch_size,
                          max_length=config.max_length)
    seconds = time.perf_counter() - started
    summary: dict[str, Any] = {"pairs": len(pairs), "scored": len(records), "dropped": len(pairs) - len(records),
                               "model": config.model, "model_path": model_path, "seconds": round(seconds, 3),
                               "pairs_per_s": round(len(records) / seconds, 2) if seconds else None}
    if store is not None:
        run_id = store.create_run("ches-score", config.model_dump(), command="skillweave ches score")
        save_scores(store, records, config.model, model_path, config.data or f"store:{config.store_run}", run_id)
        store.set_run_status(run_id, "done")
        summary["run_id"] = run_id
    if config.keep_lowest is not None:
        kept = keep_lowest(records, config.keep_lowest)
        summary["kept"] = len(kept)
        if config.output and main:
            raw = read_records(config.data) if config.data else [p.to_dict() for p in pairs]
            write_jsonl(config.output, [{**raw[r["index"]], "item_id": pairs[r["index"]].item_id,
                                         "ches_norm": r["ches_norm"]} for r in kept])
            summary["output"] = config.output
    summary["scores"] = records
    return summary
