"""Rows of the `run_prompts` table and the `runs.prompts_dir` column: which prompts a run owns.

`agents.run_prompts` decides what a continuation may load; this module only reads and writes the rows.
"""

from __future__ import annotations

from skillweave.store import Store, now


def recorded_prompts_dir(store: Store, run_id: str) -> str | None:
    """None when not recorded, '' for the packaged templates, else the absolute folder."""
    row = store._one("SELECT prompts_dir FROM runs WHERE id = ?", [run_id])
    return row["prompts_dir"] if row else None


def record_prompts_dir(store: Store, run_id: str, prompts_dir: str) -> None:
    with store.lock:
        store.db.conn.execute("UPDATE runs SET prompts_dir = ? WHERE id = ?", [prompts_dir, run_id])


def pinned_versions(store: Store, run_id: str) -> dict[str, set[str]]:
    """Template name -> the versions this run recorded in `run_prompts`."""
    pins: dict[str, set[str]] = {}
    for row in store._all("SELECT name, version FROM run_prompts WHERE run_id = ?", [run_id]):
        pins.setdefault(row["name"], set()).add(row["version"])
    return pins


def used_versions(store: Store, run_id: str) -> dict[str, set[str]]:
    """Template name -> versions found in the run's model calls and items (runs from before `run_prompts`)."""
    rows = store._all(
        "SELECT p.name, p.id AS version FROM prompt_versions p WHERE p.id IN ("
        " SELECT prompt_version FROM llm_calls WHERE run_id = ? AND prompt_version IS NOT NULL"
        " UNION SELECT j.value FROM items, json_each(items.prompt_versions) j WHERE items.run_id = ?)",
        [run_id, run_id])
    pins: dict[str, set[str]] = {}
    for row in rows:
        pins.setdefault(row["name"], set()).add(row["version"])
    return pins


def pin_version(store: Store, run_id: str, name: str, version: str, *, replace: bool = False) -> None:
    """Record that the run used `version` of `name`; `replace` drops the versions it had pinned before."""
    with store.lock:
        if replace:
            store.db.conn.execute("DELETE FROM run_prompts WHERE run_id = ? AND name = ?", [run_id, name])
        store.db.conn.execute("INSERT OR IGNORE INTO run_prompts (run_id, name, version, pinned_at) "
                              "VALUES (?, ?, ?, ?)", [run_id, name, version, now()])
