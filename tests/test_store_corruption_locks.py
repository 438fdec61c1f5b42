"""A store opened twice in one process keeps SQLite's locks: no other process may take the file as unused.

SQLite's locks are POSIX advisory locks, per process and per file: closing any descriptor on the database file
drops all of them. The store's open path once read the file's header with a plain open() and close(); a second
Store (the CLI invoked in-process, `skillweave.run` then `resume`) thereby dropped the locks of the first. Another
process closing its connection then found no other user, checkpointed and deleted the -wal and -shm files, and
this process's later writes went to a deleted WAL: lost, or, checkpointed over newer pages, a corrupt store
(`database disk image is malformed` after `--workers 2` stopped at its budget and was resumed)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from skillweave.store import Store, StoreOpenError

# another process writes one run row and closes its connection
OTHER_PROCESS = """import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("insert into runs (id, pipeline, config, status, created_at, updated_at) "
             "values (?, 'skillmix', '{}', 'done', '', '')", [sys.argv[2]])
conn.close()"""


def _other_process_writes(path: str, run_id: str) -> None:
    subprocess.run([sys.executable, "-c", OTHER_PROCESS, path, run_id], check=True, timeout=60)


def test_opening_the_store_again_keeps_this_processs_locks(tmp_path):
    path = str(tmp_path / "s.db")
    first = Store(path)
    first.create_run("skillmix", {}, run_id="first")
    Store(path).close()  # a second Store on the same file in this process (the open path inspects the file)
    _other_process_writes(path, "other-0")
    # this process still has the store open: the other process was not its last user and left the WAL alone
    assert os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
    for i in range(3):  # both sides keep writing
        first.create_run("skillmix", {}, run_id=f"this-{i}")
        _other_process_writes(path, f"other-{i + 1}")
    first.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        ids = sorted(r[0] for r in conn.execute("select id from runs"))
    finally:
        conn.close()
    # on the old code the other process's rows 1-3 were lost (this process's deleted WAL was checkpointed over them)
    assert ids == sorted(["first", *(f"this-{i}" for i in range(3)), *(f"other-{i}" for i in range(4))])


def test_the_open_path_reads_no_file_next_to_sqlite(tmp_path, monkeypatch):
    """Deterministic form of the above: opening a good store never opens its file outside SQLite."""
    import builtins

    path = str(tmp_path / "s.db")
    Store(path).close()
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.basename(os.fspath(file)).startswith("s.db"):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    first = Store(path)
    second = Store(path)
    second.close()
    first.close()
    assert opened == []


def test_a_cut_off_store_is_still_named_as_such(tmp_path):
    good, bad = tmp_path / "good.db", tmp_path / "bad.db"
    store = Store(str(good))
    for i in range(200):
        store.create_run("skillmix", {"pad": "x" * 500}, run_id=f"r{i}")
    store.close()
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreOpenError, match="the file is truncated"):
        Store(str(bad))
    assert bad.read_bytes() == data[: len(data) // 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db", "good.db"]


@pytest.mark.slow
def test_a_workers_run_after_another_in_one_process_keeps_its_final_status(tmp_path, monkeypatch):
    """The Python API's flow that lost data: a handle of a first `--workers 2` run holds its store open, a second
    run in the same store and process starts its workers; the last worker to close then deleted the WAL under
    this process, and the second run's final status (written after the workers ended) was lost ('running')."""
    import skillweave

    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0")
    db = str(tmp_path / "two-runs.db")
    settings = {"model": "fake", "k": [2], "n": 2, "rounds": 1, "grading_samples": 1, "concurrency": 1}
    first = skillweave.run("skillmix", db=db, workers=2, **settings)
    assert first.status == "done"  # the handle opens a Store and keeps it
    second = skillweave.run("skillmix", db=db, workers=2, **settings)
    assert second.summary.status == "done"
    first.store.close()
    second.store.close()
    check = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "print(c.execute('pragma integrity_check').fetchone()[0]); "
             "print(sorted(r[0] for r in c.execute('select status from runs')))")
    out = subprocess.run([sys.executable, "-c", check, db], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[:2] == ["ok", "['done', 'done']"], out.stdout + out.stderr
