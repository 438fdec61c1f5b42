"""Instruct-SkillMix exports carry the query type as the release does: its bare name.

The released generator (`src/data_generation/1_generate_data.py` in princeton-pli/Instruct-SkillMix) builds
`query_type = name + ": " + definition` only to fill the prompt; the record it writes keeps the bare name
(`query_str`) and no definition, and the released dataset names that column `query_type`. An export must
therefore never put the "name: definition" prompt string in `query_type`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import skillweave
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


def release_queries(text: str) -> list[tuple[str, str]]:
    """The released driver's `queries.txt` reading (split on `###`, then on `*`): (query_str, query_type)."""
    out = []
    for block in text.split("###"):
        if block.strip():
            parts = [p.strip() for p in block.split("*") if p.strip()]
            out.append((parts[1], f"{parts[1]}: {parts[2]}"))
    return out


def test_query_names_read_as_the_release_reads_them_definitions_do_not():
    from skillweave.catalog.instruct_formats import QueryType, format_queries_txt, parse_queries_txt
    from tests.test_instruct_formats_roundtrip import QUERIES

    written = format_queries_txt([QueryType("Comparative", "weighs options", ("A or B?",)),
                                  QueryType("Planning", "needs steps")])
    bundled = (Path(skillweave.__file__).parent / "catalog" / "data" / "instruct_queries.txt").read_text()
    bullets = QUERIES[0].split("\n", 1)[1]  # bold labels and bullets, without the preamble line
    for text in (bullets, written, bundled):
        assert [q.name for q in parse_queries_txt(text)] == [name for name, _ in release_queries(text)]
    # known differences, pinned so the docs can state them:
    # 1. the release's "name: definition" string is the third `*`-separated piece, label and examples included;
    #    skillweave's definition drops them (it only fills skillweave's own prompt wording)
    assert release_queries(written)[0][1] == 'Comparative: Definition: weighs options\nExamples:\n- "A or B?"'
    assert parse_queries_txt(written)[0].query_type == "Comparative: weighs options"
    assert release_queries(bullets)[0][1] == "Information-Seeking: -"
    # 2. a colon inside the bold name stays in the release's name; skillweave drops it
    assert [n for n, _ in release_queries(QUERIES[1])] == ["Comparative", "Narrative:"]
    assert [q.name for q in parse_queries_txt(QUERIES[1])] == ["Comparative", "Narrative"]
    # 3. text before the first `###` stops the release's reader; skillweave keeps it with the first block
    with pytest.raises(IndexError):
        release_queries(QUERIES[0])
    assert [q.name for q in parse_queries_txt(QUERIES[0])] == ["Information-Seeking", "Planning"]
