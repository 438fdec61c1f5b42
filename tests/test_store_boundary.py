"""The store has a boundary: raw SQL on the store lives in `store/` and in the few modules that own a table.

The test walks every module outside `store/` and flags what reaches past the Store's methods:
`<x>.db[...]` (a sqlite-utils table), `<x>.db.conn` (the raw connection), and calls to `.execute(`,
`.executemany(`, `.executescript(` or `.query(`, and the Store's private SQL helpers `._one(`, `._all(`, `._insert(`. A module with any of these must be on ALLOWED with the reason
it may; a new one fails the test, naming the file and line. Put the statement behind a Store method or a
function in a `store/` module (`store/reads.py` for set-based reads, `store/queries.py` for small lookups).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "benchmarks", "docs", ".venv", "build", "dist", "store"}
SQL_CALLS = {"execute", "executemany", "executescript", "query"}
PRIVATE_SQL = {"_one", "_all", "_insert"}  # Store's private helpers that take SQL text or a table name

# module path (relative to the package root) -> why it may touch SQLite directly
ALLOWED: dict[str, str] = {
    # tables a module owns, created by its package's own migration set (trainers/migrations: m0070 trainers,
    # m0080 LESS, m0090 unlearning; providers/migrations: m0121 batch jobs)
    "trainers/unlearning/lineage.py": "owns topic_models, topic_model_docs, unlearning_requests, forget_sets (m0090)",
    "trainers/selection.py": "owns selections, selection_rows (m0080)",
    "trainers/less.py": "owns less_datastores (m0080)",
    "trainers/checkpoint_rows.py": "owns train_checkpoints (m0070): the rows sft.py and dpo.py record",
    "trainers/ches.py": "owns ches_scores (m0070)",
    "trainers/evaluate.py": "owns evaluations (m0070)",
    "providers/batch.py": "owns batch_jobs, batch_requests (m0121)",
    # not the store
    "providers/reply_cache.py": "its own SQLite file (the cross-run reply cache), not the store",
    "providers/replay.py": "reads another store file read-only to replay its replies",
}


def _flags(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "db":
            found.append((node.lineno, "db[...]"))
        elif isinstance(node, ast.Attribute) and node.attr == "conn" and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "db":
            found.append((node.lineno, "db.conn"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            found.append((node.lineno, f".{node.func.attr}("))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PRIVATE_SQL \
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "self"):
            found.append((node.lineno, f"Store.{node.func.attr}("))
    return sorted(found)


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or rel.parts[0].startswith("."):
            continue
        yield rel.as_posix(), path


def test_no_raw_sql_outside_the_store_and_owning_modules():
    offenders = []
    for rel, path in _modules():
        if rel in ALLOWED:
            continue
        for line, what in _flags(ast.parse(path.read_text(), filename=str(path))):
            offenders.append(f"{rel}:{line}: {what}")
    assert not offenders, ("raw SQL outside store/ (move it behind a Store method or a store/ function, or add "
                           "the module to ALLOWED with its reason):\n" + "\n".join(offenders))


def test_allow_list_has_no_stale_entries():
    """An allowed module that no longer touches SQLite leaves the list, so the list shrinks as code moves."""
    present = {rel: path for rel, path in _modules()}
    stale = [rel for rel in ALLOWED if rel not in present or not _flags(ast.parse(present[rel].read_text()))]
    assert not stale, f"remove from ALLOWED (no raw SQL left): {stale}"


def test_the_detector_sees_each_form():
    source = ("store.db['items'].count_where('x')\nstore.db.conn.execute('select 1')\n"
              "store.db.query('select 1')\ncur.executemany('x', [])\nstore._all('select 1', [])\nself._one(request)\nstore.items(run_id)\n")
    kinds = [what for _, what in _flags(ast.parse(source))]
    assert kinds.count("db[...]") == 1 and kinds.count("db.conn") == 1
    assert kinds.count(".execute(") == 1 and kinds.count(".query(") == 1 and kinds.count(".executemany(") == 1
    assert kinds.count("Store._all(") == 1 and len(kinds) == 6


# payload keys that several modules share: spelled only in store/payload.py (read and written through it)
SHARED_PAYLOAD_KEYS = {"review_request", "review_claim"}


def test_shared_payload_keys_are_spelled_in_one_module():
    offenders = []
    for rel, path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value in SHARED_PAYLOAD_KEYS:
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not offenders, ("use skillweave.store.payload (review_request, review_claim, ...) instead of the key "
                           "string:\n" + "\n".join(offenders))
