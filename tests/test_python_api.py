"""The Python API: run / arun / resume from a script and from inside a running event loop (a notebook)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import skillweave
from skillweave.errors import ConfigError, UsageError


def test_run_returns_a_handle_with_status_metrics_and_a_dataset(tmp_path):
    db = str(tmp_path / "x.db")
    handle = skillweave.run("skillmix", k=2, n=2, rounds=1, grading_samples=1, model="fake", db=db)
    assert handle.run_id.startswith("skillmix-") and handle.status == "done"
    assert handle.summary.threads == 2 and handle.summary.done == 2
    assert handle.config.k == [2] and handle.config.judge == "fake"
    (row,) = handle.metrics["table"]
    assert row["k"] == 2 and row["combinations"] == 2
    dataset = handle.to_dataset()
    assert len(dataset) == 2 and set(dataset.column_names) >= {"instruction", "input", "output", "item_id"}
    with sqlite3.connect(db) as conn:
        status, command = conn.execute("select status, command from runs").fetchone()
    assert status == "done" and command.startswith("skillweave.run('skillmix'")


def test_arun_works_inside_a_running_event_loop(tmp_path):
    db = str(tmp_path / "nb.db")

    async def notebook_cell():
        asyncio.get_running_loop()  # a loop is running, as in Jupyter
        handle = await skillweave.arun("skillmix", k="2..3", n=1, rounds=1, grading_samples=1, model="fake", db=db)
        sync_handle = skillweave.run("skillmix", k=2, n=1, rounds=1, grading_samples=1, model="fake", db=db)
        return handle, sync_handle

    handle, sync_handle = asyncio.run(notebook_cell())
    assert handle.status == "done" and handle.summary.threads == 2  # k = 2 and 3, one combination each
    assert sync_handle.status == "done" and sync_handle.run_id != handle.run_id
    assert {r["k"] for r in handle.metrics["table"]} == {2, 3}


def test_a_failing_model_marks_items_failed_and_bad_settings_write_nothing(tmp_path):
    db = str(tmp_path / "f.db")
    handle = skillweave.run("skillmix", k=2, n=1, rounds=1, grading_samples=1, model="fake:fail", db=db)
    assert handle.status == "done" and handle.summary.failed == 1
    assert handle.items()[0]["status"] == "failed" and handle.items()[0]["error"]
    with pytest.raises(ConfigError, match="max_round: unknown setting"):
        skillweave.run("skillmix", k=2, max_round=5, model="fake", db=db)
    with pytest.raises(UsageError, match="command line only"):
        skillweave.run("math2", model="fake", db=db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 1


def test_resume_finishes_a_run_and_reuses_replies(tmp_path):
    db = str(tmp_path / "r.db")
    handle = skillweave.run("skillmix", k=2, n=2, rounds=1, grading_samples=1, model="fake", db=db)
    with sqlite3.connect(db) as conn:
        calls = conn.execute("select count(*) from llm_calls").fetchone()[0]
        conn.execute("delete from checkpoints")  # as if the process died before any thread checkpointed
        conn.execute("update runs set status = 'interrupted'")
    again = skillweave.resume(handle.run_id, db=db)
    assert again.status == "done" and again.summary.done == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from llm_calls").fetchone()[0] == calls
