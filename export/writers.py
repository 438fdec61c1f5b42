"""Row shapes, file formats and the dataset card for `skillweave export`.

Shapes (standard field names, each row with `item_id` and `run_id` plus metadata columns):
- alpaca: `instruction`, `input`, `output` (the Alpaca no-input layout when `input` is empty);
- messages: `messages` = [system?], user (instruction, then input after a blank line), assistant (output);
- prompt-completion: TRL's standard (non-conversational) `prompt` / `completion` strings;
- preference: TRL's `prompt` / `chosen` / `rejected` strings.
Formats: JSONL (one object a line), JSON (one list, like the released Alpaca files), Parquet (pyarrow), and a
Hugging Face `datasets` folder (`Dataset.save_to_disk`). Metadata columns are the same in every row (missing
values are null), so Parquet and Arrow see one schema. The card is `README.md` inside an hf folder, else
`<out>.card.md` next to the file.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from skillweave.errors import UsageError

SHAPES = ("alpaca", "messages", "prompt-completion", "preference")
FORMATS = ("jsonl", "json", "parquet", "hf")


def _prompt_text(example) -> str:
    return f"{example.instruction}\n\n{example.input}" if example.input else example.instruction


def shape_rows(examples: list, shape: str, *, system: str | None = None) -> list[dict]:
    if shape not in SHAPES:
        raise UsageError(f"unknown shape '{shape}'; expected one of {', '.join(SHAPES)}")
    meta_keys = sorted({key for e in examples for key in e.meta})
    rows = []
    for e in examples:
        if shape == "alpaca":
            row = {"instruction": e.instruction, "input": e.input, "output": e.output}
        elif shape == "messages":
            messages = [{"role": "system", "content": system}] if system else []
            messages += [{"role": "user", "content": _prompt_text(e)}, {"role": "assistant", "content": e.output}]
            row = {"messages": messages}
        elif shape == "prompt-completion":
            row = {"prompt": _prompt_text(e), "completion": e.output}
        else:
            if e.rejected is None:
                continue
            row = {"prompt": _prompt_text(e), "chosen": e.output, "rejected": e.rejected}
        row.update({"item_id": e.item_id, "run_id": e.run_id})
        row.update({key: _column_value(e.meta.get(key)) for key in meta_keys if key not in row})
        rows.append(row)
    return rows


def _column_value(value):
    # one Arrow type per column: nested dicts become JSON text; lists of strings stay lists
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def write_rows(rows: list[dict], out: Path, fmt: str, *, overwrite: bool = False) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    if not out.parent.exists():
        raise UsageError(f"--out '{out}': folder {out.parent} does not exist")
    if overwrite and out.is_dir():
        shutil.rmtree(out)
    if fmt == "jsonl":
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        out.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out)
    else:
        import datasets

        datasets.disable_progress_bars()
        datasets.Dataset.from_list(rows).save_to_disk(str(out))


def card_path(out: Path, fmt: str) -> Path:
    return out / "README.md" if fmt == "hf" else out.with_name(out.name + ".card.md")


def _models(store, runs: list[dict]) -> list[str]:
    found = []
    for run in runs:
        for key in ("model", "judge"):
            if run["config"].get(key):
                found.append(f"{key}: {run['config'][key]} ({run['id']})")
        for row in store.db.query(
            "select role, provider, model, count(*) as n from llm_calls where run_id = ? and error is null "
            "group by role, provider, model", [run["id"]],
        ):
            found.append(f"{row['role']} calls: {row['provider']}:{row['model']} x{row['n']} ({run['id']})")
    return found


def _prompt_versions(store, examples: list) -> list[str]:
    # each example carries its item's (and a pair's rejected item's) versions: no lookup per item
    versions: set[str] = {v for e in examples for v in getattr(e, "prompt_versions", ())}
    if not versions:
        return []
    marks = ", ".join("?" * len(versions))
    named = {r["id"]: r["name"] for r in store.db.query(f"select id, name from prompt_versions where id in ({marks})",
                                                       sorted(versions))}
    return [f"{named.get(v, '?')} {v}" for v in sorted(versions, key=lambda v: (named.get(v, ""), v))]


def write_card(store, runs: list[dict], examples: list, summary: dict, command: str) -> Path:
    """A markdown dataset card: counts, filters, models, prompt versions, seeds and commands."""
    path = Path(summary["card"])
    per_k = Counter(e.meta.get("k") for e in examples)
    per_type = Counter(e.meta.get("query_str") or e.meta.get("topic") for e in examples)
    shirkers = sum(bool(e.meta.get("shirker")) for e in examples)
    front = {key: summary[key] for key in ("format", "shape", "rows", "items_seen", "runs", "filters", "dropped")}
    lines = [
        "---", json.dumps(front, ensure_ascii=False, indent=1), "---", "",
        f"# skillweave export: {', '.join(summary['runs'])}", "",
        f"{summary['rows']} rows in shape `{summary['shape']}` ({summary['format']}) from {summary['items_seen']} "
        "store items. Every row carries `item_id` (the store item it came from) and `run_id`; "
        "`skillweave items lineage ITEM_ID` shows the calls and prompts behind it.", "",
        "## Counts", "",
        f"- rows: {summary['rows']}; shirker responses among them: {shirkers}",
        "- per k: " + ", ".join(f"k={k}: {n}" for k, n in sorted(per_k.items(), key=lambda kv: str(kv[0]))),
        "- per query type / topic: " + ", ".join(f"{t}: {n}" for t, n in sorted(per_type.items(), key=str)),
        "- dropped: " + ("; ".join(f"{n} {r}" for r, n in summary["dropped"].items()) or "none"), "",
        "## Filters applied", "",
        *(f"- {k}: {v}" for k, v in summary["filters"].items()), *(["- none"] if not summary["filters"] else []), "",
        "## Models", "", *(f"- {m}" for m in _models(store, runs)), "",
        "## Prompt versions", "", *(f"- {v}" for v in _prompt_versions(store, examples)), "",
        "## Seeds and run configuration", "",
        *(f"- {r['id']} ({r['pipeline']}): seed {r['config'].get('seed')}, "
          + ", ".join(f"{k}={r['config'][k]}" for k in ("n", "k", "set", "split", "rounds", "shirker_fraction",
                                                         "brevity", "dedup") if k in r["config"])
          for r in runs), "",
        "## Commands", "",
        *(f"- run: `{r.get('command') or '(not recorded)'}`" for r in runs),
        f"- export: `{command or '(library call)'}`", "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
