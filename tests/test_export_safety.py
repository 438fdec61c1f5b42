"""Exports never destroy data: --overwrite replaces only an earlier export, never a folder with other content or
the store; a failed or killed write leaves the old output; hf columns keep their declared types when all null."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from skillweave.errors import UsageError
from skillweave.export import ExportFilters, export_runs
from skillweave.store import Store
from tests.test_export import make_instruct_run


@pytest.fixture(scope="module")
def _ism_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("ism") / "template.db"
    store = Store(path)
    run_id = make_instruct_run(store)  # 10 points, 2 shirkers
    store.close()
    return path, run_id


@pytest.fixture
def ism(_ism_db, tmp_path):
    source, run_id = _ism_db
    shutil.copy(source, tmp_path / "ism.db")
    store = Store(tmp_path / "ism.db")
    yield store, run_id
    store.close()


def test_overwrite_refuses_a_folder_with_other_content(ism, tmp_path, monkeypatch):
    store, run_id = ism
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    for fmt in ("hf", "jsonl", "parquet"):
        with pytest.raises(UsageError):
            export_runs(store, [run_id], ".", fmt=fmt, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    other = tmp_path / "data"
    other.mkdir()
    (other / "mine.csv").write_text("a,b\n")
    with pytest.raises(UsageError, match="other content"):
        export_runs(store, [run_id], other, fmt="hf", overwrite=True)
    assert (other / "mine.csv").read_text() == "a,b\n"


def test_out_equal_to_the_store_is_refused(ism):
    store, run_id = ism
    size = os.path.getsize(store.path)
    for out in (store.path, store.path + "-wal"):
        with pytest.raises(UsageError, match="store"):
            export_runs(store, [run_id], out, fmt="jsonl", overwrite=True)
    assert os.path.getsize(store.path) == size
    assert store.get_run(run_id)["id"] == run_id


def test_hf_overwrite_replaces_an_earlier_export(ism, tmp_path):
    import datasets

    store, run_id = ism
    out = tmp_path / "hf"
    export_runs(store, [run_id], out, fmt="hf")
    export_runs(store, [run_id], out, fmt="hf", overwrite=True, filters=ExportFilters(exclude_shirkers=True))
    assert len(datasets.load_from_disk(str(out))) == 8
    assert (out / "README.md").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_failed_write_leaves_the_old_export_and_card(ism, tmp_path, monkeypatch):
    from skillweave.export import writers

    store, run_id = ism
    out = tmp_path / "d.jsonl"
    export_runs(store, [run_id], out)
    old_rows, old_card = out.read_text(), (tmp_path / "d.jsonl.card.md").read_text()

    def full_device(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writers, "_write_file", full_device)
    with pytest.raises(UsageError, match="No space left on device"):
        export_runs(store, [run_id], out, overwrite=True, filters=ExportFilters(exclude_shirkers=True))
    assert out.read_text() == old_rows
    assert (tmp_path / "d.jsonl.card.md").read_text() == old_card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_interrupted_write_leaves_the_old_export(ism, tmp_path, monkeypatch):
    """A kill during the write (simulated by an interrupt inside it) leaves the old file, never half a file."""
    from skillweave.export import writers

    store, run_id = ism
    out = tmp_path / "d.jsonl"
    export_runs(store, [run_id], out)
    old_rows = out.read_text()
    real = writers._write_file

    def interrupted(path, text):
        real(path, text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(writers, "_write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_runs(store, [run_id], out, overwrite=True, filters=ExportFilters(exclude_shirkers=True))
    assert out.read_text() == old_rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_hf_all_null_column_gets_its_declared_type_and_concatenates(ism, tmp_path):
    import datasets

    store, run_id = ism
    plain = make_instruct_run(store, n=3, shirker_fraction=0.0)  # orig_output is null in every row
    export_runs(store, [plain], tmp_path / "a", fmt="hf")
    export_runs(store, [run_id], tmp_path / "b", fmt="hf")
    a, b = datasets.load_from_disk(str(tmp_path / "a")), datasets.load_from_disk(str(tmp_path / "b"))
    assert a.features["orig_output"] == datasets.Value("string")
    joined = datasets.concatenate_datasets([a, b])
    assert len(joined) == 13
    assert sum(v is not None for v in joined["orig_output"]) == 2


def test_parquet_all_null_column_is_typed(ism, tmp_path):
    import pyarrow.parquet as pq

    store, _ = ism
    plain = make_instruct_run(store, n=3, shirker_fraction=0.0)
    export_runs(store, [plain], tmp_path / "a.parquet", fmt="parquet")
    schema = pq.read_schema(tmp_path / "a.parquet")
    assert str(schema.field("orig_output").type) == "string"
    assert json.loads((tmp_path / "a.parquet.card.md").read_text().split("---")[1])["rows"] == 3
