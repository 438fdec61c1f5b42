"""Instruct-SkillMix stage-1 files: skills.txt and queries.txt read/write round trips and error messages."""

import pytest

from skillweave.catalog.instruct_formats import (
    QueryType,
    bundled_instruct_skills,
    bundled_query_types,
    parse_queries_txt,
    parse_skills_txt,
    queries_from_entries,
    query_entries,
    read_queries_txt,
    read_skills_txt,
    to_snake_case,
    write_queries_txt,
    write_skills_txt,
)
from skillweave.errors import UsageError


def test_skills_txt_keeps_order_and_duplicates_unless_unique(tmp_path):
    path = tmp_path / "skills.txt"
    path.write_text("# comment\nbudget_planning\n\ncode_debugging\nbudget_planning\n  poetry  \n")
    assert read_skills_txt(path) == ["budget_planning", "code_debugging", "budget_planning", "poetry"]
    assert read_skills_txt(path, unique=True) == ["budget_planning", "code_debugging", "poetry"]
    write_skills_txt(tmp_path / "out.txt", ["a", "b"])
    assert read_skills_txt(tmp_path / "out.txt") == ["a", "b"]


def test_skills_txt_errors_name_the_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_skills_txt(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(UsageError, match="empty.txt"):
        read_skills_txt(tmp_path / "empty.txt")


def test_queries_txt_variants_parse_to_name_and_definition():
    text = (
        "Intro line before any block\n"
        "### 1. **Information-Seeking**: wants facts\n* Examples: \"What is rain?\"\n"
        "### 2. **Planning**\nDefinition: needs a plan\nExamples:\n- \"Plan a trip\"\n- \"Plan a party\"\n"
        "### 3. Narrative: tells a story\n"
    )
    queries = parse_queries_txt(text)
    assert [q.name for q in queries] == ["Information-Seeking", "Planning", "Narrative"]
    assert queries[0].query_type == "Information-Seeking: wants facts"
    assert queries[0].examples == ("What is rain?",)
    assert queries[1].definition == "needs a plan" and queries[1].examples == ("Plan a trip", "Plan a party")
    assert queries[2].definition == "tells a story"


def test_queries_round_trip_and_catalog_entries(tmp_path):
    queries = [QueryType("Comparative", "weighs options", ("A or B?",)), QueryType("Narrative", "a story")]
    path = write_queries_txt(tmp_path / "queries.txt", queries)
    assert read_queries_txt(path) == queries
    assert queries_from_entries(query_entries(queries)) == queries


def test_queries_txt_rejects_files_without_blocks_and_duplicates(tmp_path):
    (tmp_path / "bad.txt").write_text("just prose\n")
    with pytest.raises(UsageError, match="no '### N"):
        read_queries_txt(tmp_path / "bad.txt")
    (tmp_path / "dup.txt").write_text("### 1. **A**\nx\n### 2. **A**\ny\n")
    with pytest.raises(UsageError, match="more than once"):
        read_queries_txt(tmp_path / "dup.txt")


def test_bundled_lists_and_snake_case():
    skills, queries = bundled_instruct_skills(), bundled_query_types()
    assert len(skills) >= 30 and all(s == to_snake_case(s) for s in skills)
    assert len(queries) == 16 and all(q.definition and q.examples for q in queries)
    assert to_snake_case("Marketing and Promotion!") == "marketing_and_promotion"
    assert parse_skills_txt("- a\n* b\n") == ["a", "b"]
