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

Writes never destroy other data: rows and card go to temporary names in the destination folder and are renamed
into place, so a killed export leaves the old output or the new one. `--overwrite` replaces an earlier export
(a file, or an hf folder holding only what `save_to_disk` and the card write), never another folder or the store.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

from skillweave.errors import UsageError
from skillweave.store import queries

SHAPES = ("alpaca", "messages", "prompt-completion", "preference")
JSONL_CHUNK = 4096  # JSONL lines joined and written at once
FORMATS = ("jsonl", "json", "parquet", "hf")


def _prompt_text(example) -> str:
    return f"{example.instruction}\n\n{example.input}" if example.input else example.instruction


_OWN = {"alpaca": ("instruction", "input", "output"), "messages": ("messages",),
        "prompt-completion": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}


def shape_rows(examples: list, shape: str, *, system: str | None = None) -> list[dict]:
    if shape not in SHAPES:
        raise UsageError(f"unknown shape '{shape}'; expected one of {', '.join(SHAPES)}")
    meta_keys = _meta_keys({key for e in examples for key in e.meta}, shape)
    rows = []
    for e in examples:
        row = _shape_row(e, shape, system, meta_keys)
        if row is not None:
            rows.append(row)
    return rows


def _meta_keys(keys, shape: str) -> list[str]:
    """The metadata columns after the shape's own and item_id/run_id (the same for every row of a shape)."""
    own = _OWN[shape]
    return [key for key in sorted(keys) if key not in (*own, "item_id", "run_id")]


def _shape_row(e, shape: str, system: str | None, meta_keys: list[str]) -> dict | None:
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
            return None
        row = {"prompt": _prompt_text(e), "chosen": e.output, "rejected": e.rejected}
    row["item_id"], row["run_id"] = e.item_id, e.run_id
    get = e.meta.get
    for key in meta_keys:
        value = get(key)
        row[key] = _column_value(value) if isinstance(value, dict) else value
    return row


def _column_value(value):
    # one Arrow type per column: nested dicts become JSON text; lists of strings stay lists
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


# Columns a pipeline declares, so an export whose column is all null still gets its type (Arrow would infer
# `null`, and `datasets.concatenate_datasets` refuses to join that with the same column typed elsewhere).
# Other all-null columns are strings.
COLUMN_TYPES = {
    "k": "int64", "round": "int64", "combo_index": "int64", "score": "float64", "rejected_score": "float64",
    "full_marks": "bool", "shirker": "bool", "skills": "list<string>", "train_categories": "list<string>",
}
# What `Dataset.save_to_disk` writes into its folder (plus the card); an hf --overwrite replaces only such a folder.
HF_FILES = ("dataset_info.json", "state.json", "README.md")


def arrow_table(rows: list[dict]):
    """The rows as one Arrow table; all-null columns get their declared type instead of `null`."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    fields = []
    for f in table.schema:
        if pa.types.is_null(f.type):
            declared = COLUMN_TYPES.get(f.name, "string")
            f = pa.field(f.name, pa.list_(pa.string()) if declared == "list<string>" else pa.type_for_alias(declared))
        fields.append(f)
    return table.cast(pa.schema(fields))


def check_destination(out: Path, fmt: str, *, overwrite: bool, protect: tuple[Path, ...] = ()) -> None:
    """Refuse an --out that would replace the store, a folder with other content, or an existing export without
    --overwrite."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    resolved = out.resolve()
    for path in (resolved, card_path(resolved, fmt)):
        for kept in protect:
            kept = kept.resolve()
            if path == kept or path.name in (kept.name + "-wal", kept.name + "-shm") and path.parent == kept.parent \
                    or kept.is_relative_to(path):
                raise UsageError(f"--out '{out}' would overwrite the store {kept}; choose another path")
    if not resolved.parent.is_dir():
        raise UsageError(f"--out '{out}': folder {out.parent} does not exist")
    if fmt == "hf":
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out '{out}' is a file; --format hf writes a folder")
        if out.is_dir() and any(out.iterdir()):
            if not overwrite:
                raise UsageError(f"--out '{out}' already exists; pass --overwrite or choose another path")
            if not _is_hf_export(out):
                raise UsageError(f"--out '{out}' is a folder with other content; --overwrite replaces only an "
                                 "earlier hf export (dataset_info.json, state.json, data-*.arrow, README.md)")
    else:
        for path in (out, card_path(out, fmt)):
            if path.is_dir():
                raise UsageError(f"--out '{out}': {path} is a folder; --format {fmt} writes a file")
            if path.exists() and not overwrite and path == out:
                raise UsageError(f"--out '{out}' already exists; pass --overwrite or choose another path")


def refuse_store(out: str | Path, store) -> None:
    """An output path that is the store (or its -wal/-shm, or a folder holding it) is refused."""
    if store.path != ":memory:":
        check_destination(Path(out), "json", overwrite=True, protect=(Path(store.path),))


def write_text_atomic(out: str | Path, text: str) -> None:
    """Write a text file through a temporary name and a rename (a kill leaves the old file or the new one)."""
    out = Path(out)
    tmp = _temp_name(out)
    try:
        _write_file(tmp, text)
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write '{out}': {exc.strerror or exc}; nothing was replaced") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _is_hf_export(folder: Path) -> bool:
    names = [p.name for p in folder.iterdir()]
    return "state.json" in names and all(
        n in HF_FILES or (n.startswith("data-") and n.endswith(".arrow")) for n in names)


def _temp_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")


def _write_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object a line, as `json.dumps(row, ensure_ascii=False)` writes it: one encoder for all rows (not a
    new one per row), lines joined and written a few thousand at a time (not one string of the whole file)."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        for start in range(0, len(rows), JSONL_CHUNK):
            chunk = [encode(r) for r in rows[start:start + JSONL_CHUNK]]
            chunk.append("")
            f.write("\n".join(chunk))
        f.flush()
        os.fsync(f.fileno())


class ExampleCounts:
    """What the dataset card counts over the exported examples, gathered as they pass (`counting`), so a streamed
    export need not keep them: rows per k and per query type or topic, shirkers, prompt versions."""

    def __init__(self, examples=()):
        self.per_k: Counter = Counter()
        self.per_type: Counter = Counter()
        self.shirkers = 0
        self.prompt_versions: set[str] = set()
        for e in examples:
            self.add(e)

    def add(self, e) -> None:
        get = e.meta.get
        self.per_k[get("k")] += 1
        self.per_type[get("query_str") or get("topic")] += 1
        if get("shirker"):
            self.shirkers += 1
        versions = getattr(e, "prompt_versions", ())
        if versions:
            self.prompt_versions.update(versions)

    def counting(self, examples):
        for e in examples:
            self.add(e)
            yield e


def write_jsonl_stream(examples, out: Path, shape: str, *, system: str | None = None, overwrite: bool = False,
                       protect: tuple[Path, ...] = (), finish=None) -> int:
    """Write one JSONL row per example as the examples come, byte for byte what `shape_rows` then `write_rows`
    write, without holding the rows; returns the number of rows. `finish(rows)` runs after the last row and
    returns the card's text (or raises: then nothing is replaced). Temporary names and renames as `write_rows`.

    Every row has the same metadata columns (the union over all examples, sorted; missing values null), which
    are known only at the end. Rows are written with the columns seen so far; should a later example bring a new
    column, the rows written before it are read back and written again with the final columns (a JSON round
    trip gives the same text: `json` writes floats so that they read back equal, and keeps key order)."""
    check_destination(out, "jsonl", overwrite=overwrite, protect=protect)
    if shape not in SHAPES:
        raise UsageError(f"unknown shape '{shape}'; expected one of {', '.join(SHAPES)}")
    encode = json.JSONEncoder(ensure_ascii=False).encode
    temps: list[Path] = []
    try:
        tmp = _temp_name(out)
        temps.append(tmp)
        seen: set = set()
        meta_keys: list[str] = []
        rows = stale = 0  # rows written, and how many of the first ones lack a column found later
        with open(tmp, "w", encoding="utf-8", buffering=1 << 20) as f:
            chunk: list[str] = []
            for e in examples:
                if not seen.issuperset(e.meta):
                    seen.update(e.meta)
                    keys = _meta_keys(seen, shape)
                    if keys != meta_keys:
                        meta_keys, stale = keys, rows
                row = _shape_row(e, shape, system, meta_keys)
                if row is None:
                    continue
                chunk.append(encode(row))
                rows += 1
                if len(chunk) >= JSONL_CHUNK:
                    chunk.append("")
                    f.write("\n".join(chunk))
                    chunk = []
            if chunk:
                chunk.append("")
                f.write("\n".join(chunk))
            f.flush()
            os.fsync(f.fileno())
        if stale:
            tmp = _rewrite_head(tmp, stale, len(_OWN[shape]) + 2, meta_keys, encode)
            temps.append(tmp)
        card = finish(rows) if finish is not None else None
        card_tmp = None
        if card is not None:
            card_tmp = _temp_name(card_path(out, "jsonl"))
            temps.append(card_tmp)
            _write_file(card_tmp, card)
        check_destination(out, "jsonl", overwrite=overwrite, protect=protect)
        if card_tmp is not None:  # the card first, as write_rows
            os.replace(card_tmp, card_path(out, "jsonl"))
        os.replace(tmp, out)
        return rows
    except OSError as exc:
        raise UsageError(f"cannot write --out '{out}': {exc.strerror or exc}; nothing was replaced") from None
    finally:
        for path in temps:
            if path.exists():
                path.unlink()


def _rewrite_head(path: Path, count: int, head: int, meta_keys: list[str], encode) -> Path:
    """A copy of the JSONL file `path` whose first `count` rows get the columns `meta_keys` (null where missing)
    after their first `head` keys; the rest is copied as it is."""
    new = _temp_name(path)
    with open(path, encoding="utf-8", newline="\n") as src, \
            open(new, "w", encoding="utf-8", buffering=1 << 20) as dst:
        for _ in range(count):
            row = json.loads(src.readline())
            fixed = dict(list(row.items())[:head])
            for key in meta_keys:
                fixed[key] = row.get(key)
            dst.write(encode(fixed) + "\n")
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    path.unlink()
    return new


def write_rows(rows: list[dict], out: Path, fmt: str, *, overwrite: bool = False, card: str | None = None,
               protect: tuple[Path, ...] = ()) -> None:
    """Write rows (and the card text, if given) to temporary names, then rename them over --out and its card."""
    check_destination(out, fmt, overwrite=overwrite, protect=protect)
    temps: list[Path] = []
    try:
        tmp = _temp_name(out)
        temps.append(tmp)
        if fmt == "jsonl":
            _write_jsonl(tmp, rows)
        elif fmt == "json":
            _write_file(tmp, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(arrow_table(rows), tmp)
        else:
            import datasets

            datasets.disable_progress_bars()
            table = arrow_table(rows)
            datasets.Dataset.from_list(rows, features=datasets.Features.from_arrow_schema(table.schema)
                                       ).save_to_disk(str(tmp))
        card_tmp = None
        if card is not None:
            card_tmp = tmp / "README.md" if fmt == "hf" else _temp_name(card_path(out, fmt))
            temps.append(card_tmp)
            _write_file(card_tmp, card)
        if fmt == "hf":
            _swap_folder(tmp, out)
        else:  # the card first: a kill between the two renames leaves the old rows with the new card's name
            if card_tmp is not None:
                os.replace(card_tmp, card_path(out, fmt))
            os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write --out '{out}': {exc.strerror or exc}; nothing was replaced") from None
    finally:
        for path in temps:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()


def _swap_folder(new: Path, out: Path) -> None:
    """Put the finished folder `new` at `out`; an earlier export there is moved aside, then removed."""
    if not out.exists():
        os.rename(new, out)
        return
    old = _temp_name(out)
    os.rename(out, old)
    try:
        os.rename(new, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def card_path(out: Path, fmt: str) -> Path:
    return out / "README.md" if fmt == "hf" else out.with_name(out.name + ".card.md")


def _models(store, runs: list[dict]) -> list[str]:
    found = []
    for run in runs:
        for key in ("model", "judge"):
            if run["config"].get(key):
                found.append(f"{key}: {run['config'][key]} ({run['id']})")
        for row in queries.call_counts_by_model(store, run["id"]):
            found.append(f"{row['role']} calls: {row['provider']}:{row['model']} x{row['n']} ({run['id']})")
    return found


def _prompt_versions(store, versions: set[str]) -> list[str]:
    # each example carries its item's (and a pair's rejected item's) versions: no lookup per item
    if not versions:
        return []
    named = queries.prompt_names(store, versions)
    return [f"{named.get(v, '?')} {v}" for v in sorted(versions, key=lambda v: (named.get(v, ""), v))]


def write_card(store, runs: list[dict], examples: list, summary: dict, command: str) -> Path:
    """Write the dataset card to `summary["card"]` (see `render_card`)."""
    path = Path(summary["card"])
    path.write_text(render_card(store, runs, examples, summary, command), encoding="utf-8")
    return path


def render_card(store, runs: list[dict], examples: list, summary: dict, command: str) -> str:
    """A markdown dataset card: counts, filters, models, prompt versions, seeds and commands. `examples` may be
    their `ExampleCounts` (a streamed export)."""
    counts = examples if isinstance(examples, ExampleCounts) else ExampleCounts(examples)
    per_k, per_type, shirkers = counts.per_k, counts.per_type, counts.shirkers
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
        "## Prompt versions", "", *(f"- {v}" for v in _prompt_versions(store, counts.prompt_versions)), "",
        "## Seeds and run configuration", "",
        *(f"- {r['id']} ({r['pipeline']}): seed {r['config'].get('seed')}, "
          + ", ".join(f"{k}={r['config'][k]}" for k in ("n", "k", "set", "split", "rounds", "shirker_fraction",
                                                         "brevity", "dedup") if k in r["config"])
          for r in runs), "",
        "## Commands", "",
        *(f"- run: `{r.get('command') or '(not recorded)'}`" for r in runs),
        f"- export: `{command or '(library call)'}`", "",
    ]
    return "\n".join(lines)
