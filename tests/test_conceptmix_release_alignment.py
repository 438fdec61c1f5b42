"""ConceptMix released prompt sets interleave empty strings among the questions; the non-empty questions, in
order, are the categories one to one. The fixture below is our own, written in the release's layout (k = 1:
two categories, three question slots, the middle one empty, as 128 of the 2,100 released records are)."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from skillweave.catalog.conceptmix import load_sentence_file, question_categories
from skillweave.cli import cli
from skillweave.providers.core import FakeProvider, clear_providers, message_text, register_provider

RELEASE_SHAPED = [
    {"index": 1, "sentence": "A fern next to a kettle.", "categories": ["object", "object"],
     "skills": ["fern", "kettle"], "question": ["Does the image contain a fern?", "", "Does the image contain a kettle?"]},
    {"index": 2, "sentence": "A snail in watercolor.", "categories": ["object", "style"], "skills": ["snail", "watercolor"],
     "question": ["Does the image contain a snail?", "", "Is the style of the image watercolor?"]},
    {"index": 3, "sentence": "A blue mug.", "categories": ["object", "color"], "skills": ["mug", "blue"],
     "question": ["Does the image contain a mug?", "Is the mug blue?"]},
]


def test_question_categories_skip_the_empty_slots():
    assert question_categories(["a?", "", "b?"], ["object", "style"]) == ["object", None, "style"]
    assert question_categories(["a?", "b?"], ["object", "color"]) == ["object", "color"]
    assert question_categories(["a?", "", ""], ["object", "size"]) == ["unaligned", None, None]


@pytest.fixture
def fresh_providers():
    clear_providers()
    yield
    clear_providers()


def test_import_reports_style_and_object_not_unaligned(tmp_path, fresh_providers):
    path = tmp_path / "3_sentences_k=1.json"
    path.write_text(json.dumps(RELEASE_SHAPED))
    register_provider("fake:nostyle", FakeProvider(model="nostyle", script=lambda req: (
        "No" if "style of the image" in message_text(req.messages[-1]) else "Yes")), max_concurrency=8)
    db = tmp_path / "c.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "import", "conceptmix", str(path), "--grader", "fake:nostyle"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["--db", str(db), "conceptmix", "report", "latest", "--json"])
    by_category = json.loads(result.stdout)[0]["scores"]["by_category"]
    assert "unaligned" not in by_category
    assert by_category["style"]["question_accuracy"]["n"] == 1 and by_category["style"]["question_accuracy"]["p"] == 0
    assert by_category["color"]["question_accuracy"]["p"] == 1
    assert by_category["object"]["question_accuracy"]["n"] == 4


OFFICIAL = os.environ.get("SKILLWEAVE_OFFICIAL_CONCEPTMIX")


@pytest.mark.skipif(not OFFICIAL, reason="set SKILLWEAVE_OFFICIAL_CONCEPTMIX to a checkout of princetonvisualai/conceptmix")
def test_released_sets_align():
    files = sorted((Path(OFFICIAL) / "sentence_collection").glob("*_sentences_k=*.json"))
    assert len(files) == 7
    unaligned = total = 0
    for path in files:
        _, records = load_sentence_file(path)
        for r in records:
            total += 1
            unaligned += "unaligned" in question_categories(r["question"], r["categories"])
    assert total == 2100 and unaligned == 1  # the one record with a question fewer than its categories


@pytest.mark.skipif(not OFFICIAL, reason="set SKILLWEAVE_OFFICIAL_CONCEPTMIX to a checkout of princetonvisualai/conceptmix")
def test_released_concept_files_load():
    from skillweave.catalog.conceptmix import load_concept_catalog

    config = Path(OFFICIAL) / "config"
    catalog = load_concept_catalog(config)
    sizes = {name: len(c.values) for name, c in catalog.categories.items()}
    assert sizes == {name: len(json.loads((config / f"{name}.json").read_text())["skill"]) for name in sizes}
    assert set(sizes) == {p.stem for p in config.glob("*.json")} and sizes["object"] == 52 and sizes["spatial"] == 10
