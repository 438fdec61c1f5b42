"""`--workers` stopped at its budget and resumed in ONE process (the CLI invoked twice in-process, as notebooks and
the tests do) leaves an intact store with the run's final status (docs/reliability.md, "The store file").

The first command's Store stays open until the garbage collector frees it (it is part of a reference cycle); the
second command's Store used to drop that connection's SQLite locks while opening the file, so the workers took the
file as unused and deleted the WAL under the parent: the resumed run's final status was lost, or the store was
corrupt (`database disk image is malformed`). Here the collector is held off between the two commands, so the
first Store is still open, as it is whenever the collector happens to run late."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys

import pytest


def _check(db: str) -> list[str]:
    """Integrity and the run's status, as another process reads them."""
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(c.execute('pragma integrity_check').fetchone()[0], c.execute('select status from runs').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, db], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).split()


@pytest.mark.slow
def test_budget_stop_and_resume_in_one_process_keep_the_store_intact(cli_run, db_path, monkeypatch, cheap_models):
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    base = ("run", "skillmix", "--k", "2", "--n", "6", "--rounds", "1", "--grading-samples", "2", "--model", "cheap",
            "--judge", "cheap", "--concurrency", "1", "--workers", "2")
    was_enabled = gc.isenabled()
    gc.disable()  # the first command's Store stays open while the resume runs
    try:
        code, _, err = cli_run(*base, "--max-cost", "0.5")
        assert code == 4 and "stopped by its budget" in err, err
        run_id = sqlite3.connect(db_path).execute("select id from runs").fetchone()[0]
        code, _, err = cli_run("resume", run_id, "--max-cost", "5", "--workers", "2")
        assert code == 0, err  # old code: 3 of 10 runs 'Error: ... database disk image is malformed'
    finally:
        if was_enabled:
            gc.enable()
    gc.collect()  # the parent's Stores close now, each connection's last checkpoint included
    assert _check(db_path) == ["ok", "done"]  # old code: the other 7 of 10 'ok running' (status lost)
