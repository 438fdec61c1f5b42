"""Instruct-SkillMix exports carry the query type as the release does: its bare name.

The released generator (`src/data_generation/1_generate_data.py` in princeton-pli/Instruct-SkillMix) builds
`query_type = name + ": " + definition` only to fill the prompt; the record it writes keeps the bare name
(`query_str`) and no definition, and the released dataset names that column `query_type`. An export must
therefore never put the "name: definition" prompt string in `query_type`.
"""

from __future__ import annotations

import json

from skillweave.catalog.instruct_formats import bundled_query_types
from skillweave.export import export_runs
from skillweave.store import Store
from tests.test_export import make_instruct_run

# the keys of a record in the release's aggregated file (its `concatenate_json`)
RELEASE_RECORD_KEYS = {"instruction", "input", "output", "skills_joined_str", "query_str", "generator"}


def test_exported_query_type_is_the_bare_name(tmp_path):
    store = Store(tmp_path / "ism.db")
    run_id = make_instruct_run(store, n=6, shirker_fraction=0.0)
    names = {q.name: q.definition for q in bundled_query_types()}
    topics = {i["id"]: i["topic"] for i in store.items(run_id)}
    for fmt, name in (("jsonl", "a.jsonl"), ("json", "a.json")):
        export_runs(store, [run_id], tmp_path / name, fmt=fmt, shape="alpaca")
        text = (tmp_path / name).read_text()
        rows = [json.loads(x) for x in text.splitlines()] if fmt == "jsonl" else json.loads(text)
        assert len(rows) == 6
        for row in rows:
            assert RELEASE_RECORD_KEYS <= set(row)
            assert row["query_type"] == row["query_str"] == topics[row["item_id"]]
            assert row["query_type"] in names and ": " not in row["query_type"]
            # the definition the prompt used is still exported, under its own key
            assert row["query_definition"] == names[row["query_type"]]
            assert row["input"] == "" and row["skills_joined_str"] == ", ".join(row["skills"])
    store.close()
