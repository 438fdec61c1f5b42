"""Instruct-SkillMix skills.txt / queries.txt: definitions parse without stray bold markers, and a file imported
into the store exports byte for byte as it came in (our own fixtures, in the stage-1 file layouts)."""

import pytest

from skillweave.catalog.instruct_formats import (
    QueryType,
    format_queries_txt,
    parse_queries_txt,
    read_queries_txt,
    skills_txt_entries,
    skills_txt_from_entries,
)

QUERIES = [
    # bold field labels, bullets, a preamble line, no final newline
    "Query types:\n### 1. **Information-Seeking**\n- **Definition:** The person wants facts about a subject.\n"
    "- **Examples:** \"Why is the sky blue?\"\n\n### 2. **Planning**\n**Definition:** The person needs steps.\n"
    "**Examples:**\n- \"Plan my week.\"",
    # definition on the header line after a bold name, CRLF line endings, final newline
    "### 1. **Comparative**: ** Weighs options against each other.\r\n### 2. **Narrative:** Tells a story.\r\n",
]


@pytest.mark.parametrize("text", QUERIES)
def test_definitions_have_no_bold_markers(text):
    for q in parse_queries_txt(text):
        assert q.definition and "*" not in q.definition and not q.definition.startswith(":"), q
    assert [q.definition for q in parse_queries_txt(QUERIES[0])] == ["The person wants facts about a subject.",
                                                                     "The person needs steps."]
    assert parse_queries_txt(QUERIES[0])[0].examples == ("Why is the sky blue?",)


SKILLS = ["budget_planning\ncode_debugging\npersuasive_writing", "budget_planning\r\ncode_debugging\r\n",
          "# skills\n- budget_planning\n\ncode_debugging\nbudget_planning\n\n"]


@pytest.mark.parametrize("text", SKILLS)
def test_skills_round_trip_through_the_store(cli_run, tmp_path, text):
    src, out = tmp_path / "skills.txt", tmp_path / "out" / "skills.txt"
    src.write_bytes(text.encode())
    code, _, err = cli_run("skills", "import", str(src), "--name", "sk")
    assert code == 0, err
    out.parent.mkdir()
    code, _, err = cli_run("skills", "export", "sk", str(out), "--format", "skills-txt")
    assert code == 0, err
    assert out.read_bytes() == text.encode()


@pytest.mark.parametrize("text", QUERIES)
def test_queries_round_trip_through_the_store(cli_run, tmp_path, text):
    src, out = tmp_path / "queries.txt", tmp_path / "out" / "queries.txt"
    src.write_bytes(text.encode())
    code, _, err = cli_run("skills", "import", str(src), "--name", "qt")
    assert code == 0, err
    out.parent.mkdir()
    code, _, err = cli_run("skills", "export", "qt", str(out), "--format", "queries-txt")
    assert code == 0, err
    assert out.read_bytes() == text.encode()
    assert read_queries_txt(out) == read_queries_txt(src)


def test_edited_catalogs_are_written_canonically_without_an_empty_last_skill():
    entries = skills_txt_entries("a\nb\n")
    entries[1] = {"name": "c"}  # a skill renamed in review: no original text to reuse
    text = skills_txt_from_entries(entries)
    assert text == "a\nc" and "" not in text.split("\n")  # the released reader splits on newlines
    queries = [QueryType("Comparative", "weighs options", ("A or B?",))]
    assert parse_queries_txt(format_queries_txt(queries)) == queries
