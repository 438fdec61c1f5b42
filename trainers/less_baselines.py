"""Selections and the LESS baselines: random and RDS (representation similarity); InfSGD is `less.run` with
`train_side='sgd'`.

Design choices
- A saved selection is a store run (pipeline `select-<method>`) with one `selected` item per chosen row (payload:
  Alpaca `instruction`/`input`/`output`, the original `row`, its index and score; `parent_id` = its item_id), so
  `skillweave export SELECTION_ID` writes it like any dataset; the `selections` and
  `selection_rows` tables keep the method provenance and per-row scores. The id hashes method, pool, provenance
  and the chosen rows, so rerunning the same selection never duplicates it.
- Files next to the datastore, as upstream: `selected/<id>/sorted.csv` (row, item_id, score; all rows, best
  first), `top_p<fraction>.jsonl` (original rows, unchanged) and `scores.pt`.
- RDS uses the final-layer hidden state at the last real token of prompt + response, cosine similarity, and
  the same subtask aggregation as LESS (mean within a subtask, max across).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from skillweave.trainers import less_features as lf
from skillweave.trainers.selection import (  # noqa: F401  (moved; kept importable here)
    _alpaca,
    get_selection,
    save_selection,
)


def selected_payloads(store: Any, selection_id: str) -> list[dict]:
    """The selected rows exactly as they were in the pool, best first."""
    get_selection(store, selection_id)
    return [item["payload"]["row"] for item in store.items(selection_id, kind="selected")]


def random_selection(n_pool: int, fraction: float, seed: int) -> list[int]:
    k = max(1, int(fraction * n_pool))
    return random.Random(seed).sample(range(n_pool), k)


@torch.no_grad()
def last_token_states(model, encoded: list[dict], pad_id: int, batch_size: int = 8) -> torch.Tensor:
    """Final-layer hidden state at each example's last real token, shape (N, hidden)."""
    model.eval()
    rows = []
    for b in range(0, len(encoded), batch_size):
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in lf.pad_batch(encoded[b : b + batch_size], pad_id).items()}
        # logits_to_keep=1: the vocabulary projection of every position would cost batch x length x vocab floats
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                    logits_to_keep=1)
        last = batch["attention_mask"].sum(1) - 1
        rows.append(out.hidden_states[-1][torch.arange(len(last)), last].float())
    return torch.cat(rows)


def rds_scores(model, pool_enc: list[dict], target_enc: list[dict], pad_id: int, n_subtasks: int,
               batch_size: int = 8) -> torch.Tensor:
    from skillweave.trainers.less import less_scores

    pool = last_token_states(model, pool_enc, pad_id, batch_size)
    targets = last_token_states(model, target_enc, pad_id, batch_size)
    return less_scores([pool], [targets], [1.0], n_subtasks)
