"""JSONL exports stream: rows are written as the items are read, byte for byte what the whole-list path writes
(`collect`, `shape_rows`, `write_rows`), with memory that does not grow with the run."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from skillweave.export import ExportFilters, collect, export_runs, writers
from skillweave.export.writers import render_card, shape_rows, write_rows
from skillweave.store import Store, jdump, now, stable_id
from tests.test_read_outputs_golden import EXPORTS, INSTRUCT, SKILLMIX, build_store

CASES = {  # streamed (JSONL, one row per example) golden exports, as export_runs arguments
    name: args for name, args in EXPORTS.items() if name.endswith(".jsonl") and "pref" not in name}


def _filters(args: list[str]) -> tuple[list[str], ExportFilters, str]:
    runs, filters, shape, i = [], ExportFilters(), "alpaca", 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            runs.append(a)
        elif a == "--status":
            filters.status, i = (None if args[i + 1] == "any" else args[i + 1]), i + 1
        elif a == "--shape":
            shape, i = args[i + 1], i + 1
        elif a == "--reviewed-only":
            filters.reviewed_only = True
        elif a == "--exclude-shirkers":
            filters.exclude_shirkers = True
        elif a == "--full-marks":
            filters.full_marks = True
        elif a == "--k":
            filters.k, i = [int(args[i + 1])], i + 1
        elif a == "--min-score":
            filters.min_score, i = float(args[i + 1]), i + 1
        else:
            raise AssertionError(a)
        i += 1
    return runs, filters, shape


@pytest.mark.parametrize("chunk", [1, 3, 4096])
@pytest.mark.parametrize("name", sorted(CASES))
def test_streamed_jsonl_equals_the_whole_list_path(tmp_path, monkeypatch, name, chunk):
    """Small chunks put the rows written before a new column arrives (an Instruct-SkillMix run's columns, then a
    Skill-Mix run's; `review` on a later item) in several writes, all read back and rewritten."""
    monkeypatch.setattr(writers, "JSONL_CHUNK", chunk)
    db = str(tmp_path / "g.db")
    build_store(db)
    store = Store(db)
    runs, filters, shape = _filters(CASES[name])
    streamed = tmp_path / "streamed.jsonl"
    summary = export_runs(store, runs, streamed, shape=shape, filters=filters, command="c")

    examples, dropped, run_rows, seen = collect(store, runs, filters)
    rows = shape_rows(examples, shape)
    whole = tmp_path / "whole.jsonl"
    expected = {"out": str(streamed), "format": "jsonl", "shape": shape, "rows": len(rows), "items_seen": seen,
                "runs": runs, "filters": filters.describe(), "dropped": dict(dropped.most_common()),
                "card": str(writers.card_path(streamed, "jsonl"))}
    assert summary == expected and list(summary) == list(expected)
    write_rows(rows, whole, "jsonl", card=render_card(store, run_rows, examples, summary, "c"))
    assert streamed.read_bytes() == whole.read_bytes()
    assert Path(str(streamed) + ".card.md").read_bytes() == Path(str(whole) + ".card.md").read_bytes()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary file left


def test_no_rows_leaves_an_earlier_export_and_no_temporary_file(tmp_path):
    db = str(tmp_path / "g.db")
    build_store(db)
    store = Store(db)
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n")
    from skillweave.errors import UsageError

    with pytest.raises(UsageError, match="no rows to export"):
        export_runs(store, [SKILLMIX, INSTRUCT], out, filters=ExportFilters(k=[9]), overwrite=True)
    assert out.read_text() == "earlier\n"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def _fill(path: str, n: int) -> tuple[Store, str]:
    store = Store(path)
    run_id = store.create_run("skillmix", {"k": [3], "n": n, "seed": 0}, command="test")
    stamp, items, grades, reviews = now(), [], [], []
    for i in range(n):
        item_id = store.item_id(run_id, "skillmix.text", i, 0)
        items.append((item_id, run_id, "skillmix.text", i, 0, 3, jdump(["a", "b", "c"]), "t", "done",
                      jdump({"prompt_0": f"prompt {i} " * 8, "text_1": f"text {i} " * 12}), "[]", stamp, stamp))
        grades.append((stable_id(item_id, "j", 0), item_id, run_id, "j", 0, jdump([1, 1, 1, i % 2, 1, 1]), 5, "ok",
                       stamp))
        if i % 3 == 2:
            reviews.append((stable_id("r", item_id), item_id, run_id, "ann", "approve", "", "{}", stamp))
    with store.transaction():  # one transaction for the three tables
        for table, rows in (("items", items), ("grades", grades), ("reviews", reviews)):
            store.insert_rows(table, rows)
    return store, run_id


def test_export_memory_does_not_grow_with_the_run(tmp_path, monkeypatch):
    """Python heap peak of a JSONL export at 2,000 and 16,000 items (lines written 256 at a time, rows read 1,024
    at a time, so both sizes are above both): flat (5.6 and 6.6 MB). The whole-list path, which kept every
    example and row until it wrote, peaked at 7.5 and 41.7 MB here."""
    monkeypatch.setattr(writers, "JSONL_CHUNK", 256, raising=False)
    peaks = []
    for n in (2000, 16000):
        store, run_id = _fill(str(tmp_path / f"r{n}.db"), n)
        out = tmp_path / f"r{n}.jsonl"
        export_runs(store, [run_id], out)  # warm
        tracemalloc.start()
        export_runs(store, [run_id], out, overwrite=True)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert sum(1 for _ in open(out)) == n
        store.close()
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_the_export_window_restores_the_thresholds():
    import gc

    from skillweave.collector import fewer_collections

    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with fewer_collections(50_000):
            assert gc.get_threshold()[0] == (max(50_000, before[0]) if before[0] else 0)
            raise RuntimeError("boom")
    assert gc.get_threshold() == before
