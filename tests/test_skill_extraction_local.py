"""The embedded model end to end (slow: deselected by default; run with `pytest -m slow`)."""

from __future__ import annotations

import json

import pytest

from skillweave.store import Store

pytestmark = pytest.mark.slow


def test_extract_skills_and_solve_on_the_embedded_model(cli_run, db_path):
    code, _, err = cli_run(
        "run",
        "extract-skills",
        "--dataset",
        "bundled",
        "--split",
        "train",
        "--limit",
        "3",
        "--model",
        "local",
        "--reviewer",
        "auto",
        "--parse-retries",
        "1",
        "--cluster-max-tokens",
        "160",
    )
    assert code == 0, err
    store = Store(db_path)
    run_id = store.list_runs(pipeline="extract-skills")[0]["id"]
    calls = list(store.db["llm_calls"].rows_where("run_id = ?", [run_id]))
    assert calls and all(c["provider"] == "local" for c in calls)
    item = next(store.items(run_id, kind="skills.catalog"))
    # a real small model may fail every label; then the run ends failed with that reason, never a fake bank
    if item["status"] == "done":
        bank = store.get_catalog(store.run_catalogs(run_id)["bank"])
        assert bank["kind"] == "bank" and bank["exemplars"]
    else:
        assert item["status"] == "failed" and "labelled" in item["error"]
    code, out, err = cli_run(
        "eval", "solve", "--model", "local", "--limit", "1", "--max-tokens", "64", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert {m: s["n"] for m, s in report["summary"].items()} == {"skill": 1, "random": 1, "fixed": 1}
