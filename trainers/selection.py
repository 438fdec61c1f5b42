"""Saving a data selection (LESS, InfSGD, random, RDS) to files and, with a store, as a `select-<method>` run.

Shared by `less.run` and the baselines in `less_baselines`; it lives here so neither imports the other.
"""

from __future__ import annotations

import csv
import json
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


def list_selections(store) -> list[dict]:
    """Stored selections (id, method, pool, sizes, fraction, time), newest first."""
    return list(store.db["selections"].rows_where(
        order_by="created_at desc", select="id, method, pool, n_pool, n_selected, fraction, created_at"))


def get_selection(store: Any, selection_id: str) -> dict[str, Any]:
    """A stored selection with its provenance decoded and its `rows` (rank, row index, item id, score) by rank."""
    from skillweave.store import jload

    rows = list(store.db["selections"].rows_where("id = ?", [selection_id]))
    if not rows:
        raise NotFound(f"no selection '{selection_id}' in {store.path}; `skillweave select list` shows them")
    selection = {**rows[0], "provenance": jload(rows[0]["provenance"], {})}
    selection["rows"] = list(store.db["selection_rows"].rows_where("selection_id = ?", [selection_id],
                                                                    order_by="rank"))
    return selection


def _alpaca(row: dict) -> dict[str, str]:
    """instruction/input/output of a row (last user turn, last assistant turn), for the store's exporters."""
    if "instruction" in row and "output" in row:
        return {"instruction": str(row["instruction"]), "input": str(row.get("input") or ""),
                "output": str(row["output"])}
    messages = lf.to_messages(row)
    users = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    return {"instruction": users[-1] if users else "", "input": "", "output": answers[-1]}
