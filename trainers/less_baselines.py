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

import csv
import json
import random
from pathlib import Path
from typing import Any

import torch

from skillweave.errors import NotFound
from skillweave.trainers import less_features as lf


def save_selection(store: Any, method: str, pool: list[dict], selected: list[int], scores: torch.Tensor | None,
                   provenance: dict, *, out: Path, name: str, fraction: float, source_run: str | None = None,
                   pool_path: str = "") -> dict[str, Any]:
    """Write the selection files and (with a store) record the selection; returns its id and paths."""
    from skillweave.store import jdump, now, stable_id

    selection_id = f"select-{method}-" + stable_id(method, provenance.get("pool_hash"), provenance, selected,
                                                   length=12)
    folder = Path(out) / "selected" / selection_id
    folder.mkdir(parents=True, exist_ok=True)
    score_list = [float(s) for s in scores] if scores is not None else [None] * len(pool)
    if scores is None:
        chosen = set(selected)
        order = selected + [i for i in range(len(pool)) if i not in chosen]
    else:
        order = sorted(range(len(pool)), key=lambda i: (-score_list[i], i))
    with open(folder / "sorted.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "item_id", "score"])
        for i in order:
            writer.writerow([i, pool[i].get("item_id", ""), score_list[i]])
    top_path = folder / f"top_p{fraction:g}.jsonl"
    with open(top_path, "w", encoding="utf-8") as handle:
        for i in selected:
            handle.write(json.dumps(pool[i], ensure_ascii=False) + "\n")
    if scores is not None:
        torch.save(scores, folder / "scores.pt")
    result = {"selection_id": selection_id, "folder": str(folder), "top_path": str(top_path),
              "n_pool": len(pool), "n_selected": len(selected)}
    if store is None:
        return result
    if store.db["selections"].count_where("id = ?", [selection_id]):
        return result
    store.create_run(f"select-{method}", provenance, command=f"skillweave select {method}", run_id=selection_id)
    for rank, i in enumerate(selected):
        store.ensure_item(selection_id, "selected", rank, status="done", parent_id=pool[i].get("item_id"),
                          payload={**_alpaca(pool[i]), "row": pool[i], "row_index": i, "score": score_list[i]})
    with store.lock, store.db.conn:
        store.db["selections"].insert({
            "id": selection_id, "method": method, "run_id": selection_id, "source_run": source_run,
            "pool": pool_path or name, "pool_hash": provenance.get("pool_hash"), "n_pool": len(pool),
            "n_selected": len(selected), "fraction": fraction, "provenance": jdump(provenance), "created_at": now()})
        store.db["selection_rows"].insert_all(
            {"selection_id": selection_id, "rank": rank, "row_index": i, "item_id": pool[i].get("item_id"),
             "score": score_list[i]} for rank, i in enumerate(selected))
    store.set_run_status(selection_id, "done")
    return result


def _alpaca(row: dict) -> dict[str, str]:
    """instruction/input/output of a row (last user turn, last assistant turn), for the store's exporters."""
    if "instruction" in row and "output" in row:
        return {"instruction": str(row["instruction"]), "input": str(row.get("input") or ""),
                "output": str(row["output"])}
    messages = lf.to_messages(row)
    users = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    return {"instruction": users[-1] if users else "", "input": "", "output": answers[-1]}


def get_selection(store: Any, selection_id: str) -> dict[str, Any]:
    from skillweave.store import jload

    rows = list(store.db["selections"].rows_where("id = ?", [selection_id]))
    if not rows:
        raise NotFound(f"no selection '{selection_id}' in {store.path}; `skillweave select list` shows them")
    selection = {**rows[0], "provenance": jload(rows[0]["provenance"], {})}
    selection["rows"] = list(store.db["selection_rows"].rows_where("selection_id = ?", [selection_id],
                                                                    order_by="rank"))
    return selection


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
