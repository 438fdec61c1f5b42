"""ConceptMix catalog, sampler statistics (fixed seed), configuration completion and validation."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from skillweave.catalog.conceptmix import (
    CATEGORIES,
    ConceptCatalog,
    complete_config_by_rule,
    config_from_concepts,
    describe_concept,
    load_concept_catalog,
    plural,
    sample_concepts,
    sample_record,
    template_question,
    validate_refined_config,
)
from skillweave.errors import ConfigError, ParseFailure, UsageError


@pytest.fixture(scope="module")
def catalog() -> ConceptCatalog:
    return load_concept_catalog()


def test_packaged_catalog_has_the_eight_categories(catalog):
    assert set(catalog.categories) == set(CATEGORIES)
    sizes = {name: len(cat.values) for name, cat in catalog.categories.items()}
    assert sizes == {"object": 52, "color": 11, "number": 3, "shape": 5, "size": 2, "texture": 3, "spatial": 10,
                     "style": 15}
    assert all("{" in cat.description for cat in catalog.categories.values())


def test_official_layout_loads_and_placeholders_are_normalised(tmp_path):
    # The official files use {skill}/{skills} and have no question template.
    (tmp_path / "object.json").write_text(json.dumps(
        {"category": "object", "description": "picture has {skills}.", "skill": {"kettle": "", "owl": ""}}))
    (tmp_path / "color.json").write_text(json.dumps(
        {"category": "color", "description": "{object} is {skill}", "skill": {"teal": ""}}))
    cat = load_concept_catalog(tmp_path)
    assert cat.values("object") == ["kettle", "owl"]
    assert cat.categories["object"].description == "picture has {objects}."
    owl = {"category": "object", "value": "owl", "target": 1}
    assert describe_concept(cat, owl, {"objects": [{"id": 1, "item": "owl"}]}) == "picture has owls"
    assert cat.categories["color"].description == "{object} is {value}"
    sample = sample_record(cat, 1, seed=3, index=0)
    assert sample.categories == ["object", "color"] or sample.categories == ["object", "object"]
    color = next(c for c in sample.concepts if c["category"] == "color") if "color" in sample.categories else None
    if color:
        assert template_question(cat, color, sample.config).startswith("Is the ")


def test_bad_category_files_raise_usage_errors(tmp_path):
    (tmp_path / "object.json").write_text("{not json")
    with pytest.raises(UsageError, match="object.json"):
        load_concept_catalog(tmp_path)
    (tmp_path / "object.json").write_text(json.dumps({"category": "weather", "skill": {"rain": ""}}))
    with pytest.raises(UsageError, match="unknown category 'weather'"):
        load_concept_catalog(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        load_concept_catalog(tmp_path / "missing")


def test_object_count_follows_one_plus_binomial(catalog):
    rng = random.Random(1234)
    k, draws = 4, 4000
    counts = Counter(len([c for c in sample_concepts(catalog, k, rng).concepts if c["category"] == "object"])
                     for _ in range(draws))
    mean_extra = sum((n - 1) * m for n, m in counts.items()) / draws
    assert abs(mean_extra - k * 0.25) < 0.06  # E = 1.0, sd of the mean ~0.014
    assert abs(counts[1] / draws - 0.75**4) < 0.03  # P(no extra object) = 0.316
    assert set(counts) <= {1, 2, 3, 4, 5}


def test_extra_object_probability_is_configurable(catalog):
    rng = random.Random(7)
    samples = [sample_concepts(catalog, 3, rng, p_extra_object=0.0) for _ in range(200)]
    assert all(s.categories.count("object") == 1 for s in samples)
    samples = [sample_concepts(catalog, 3, rng, p_extra_object=1.0) for _ in range(50)]
    assert all(s.categories == ["object"] * 4 for s in samples)


def test_category_constraint_and_one_style(catalog):
    rng = random.Random(99)
    seen_repeat = False
    for _ in range(3000):
        k = rng.randint(1, 7)
        sample = sample_concepts(catalog, k, rng)
        assert len(sample.concepts) == k + 1
        cats = Counter(sample.categories)
        objects = cats.pop("object")
        assert objects >= 1
        assert all(n <= objects for n in cats.values()), sample.categories
        assert cats["style"] <= 1
        seen_repeat |= any(n >= 2 for n in cats.values())  # drawn with replacement: repeats happen
        items = [c["value"] for c in sample.concepts if c["category"] == "object"]
        assert len(set(items)) == len(items)
        for obj in sample.config["objects"]:  # one value per attribute per object
            for c in sample.concepts:
                if c["category"] in ("color", "number", "shape", "size", "texture") and c["target"] == obj["id"]:
                    assert obj[c["category"]] == c["value"]
    assert seen_repeat


def test_non_object_categories_are_roughly_uniform_at_k1(catalog):
    rng = random.Random(5)
    drawn = Counter()
    for _ in range(3500):
        sample = sample_concepts(catalog, 1, rng)
        drawn.update(c for c in sample.categories[1:] if c != "object")
    total = sum(drawn.values())
    assert set(drawn) == set(CATEGORIES) - {"object"}
    assert all(abs(n / total - 1 / 7) < 0.03 for n in drawn.values())


def test_seeded_records_are_reproducible_and_attempts_differ(catalog):
    a = sample_record(catalog, 3, seed=10, index=4)
    b = sample_record(catalog, 3, seed=10, index=4)
    assert a.concepts == b.concepts and a.config == b.config
    others = [sample_record(catalog, 3, seed=10, index=4, attempt=i).concepts for i in range(1, 6)]
    assert any(o != a.concepts for o in others)


def test_invalid_k_is_a_config_error(catalog):
    with pytest.raises(ConfigError, match="k=0"):
        sample_concepts(catalog, 0, random.Random(0))


def test_rule_completion_fills_relations_and_adds_references(catalog):
    config = {"objects": [{"id": 1, "item": "dog", "size": "huge"}],
              "relation": [{"name": "left", "description": "", "ObjectA_id": "?", "ObjectB_id": "?"}]}
    concepts = [{"category": "object", "value": "dog", "target": 1}, {"category": "size", "value": "huge", "target": 1},
                {"category": "spatial", "value": "left", "target": 0}]
    refined = complete_config_by_rule(config, concepts, random.Random(0))
    assert config["relation"][0]["ObjectA_id"] == "?"  # input untouched
    assert len(refined["objects"]) == 2 and refined["objects"][1]["reference"] is True
    assert (refined["relation"][0]["ObjectA_id"], refined["relation"][0]["ObjectB_id"]) == (1, 2)
    question = template_question(catalog, concepts[2], refined)
    assert question.startswith("In the image, is it true that the dog is on the left of the ")


def test_same_object_on_both_sides_reads_as_another_instance(catalog):
    config = {"objects": [{"id": 1, "item": "cat", "number": "2"}],
              "relation": [{"name": "above", "description": "", "ObjectA_id": 1, "ObjectB_id": 1}]}
    text = describe_concept(catalog, {"category": "spatial", "value": "above", "target": 0}, config)
    assert text == "the cat is higher up than another cat and does not touch it"


def test_validate_refined_config(catalog):
    original = {"objects": [{"id": 1, "item": "cow", "color": "brown"}],
                "relation": [{"name": "inside", "description": "", "ObjectA_id": "?", "ObjectB_id": "?"}]}
    good = {"objects": [{"id": 1, "item": "cow", "color": "brown"}, {"id": "2", "item": "barn"}],
            "relation": [{"name": "inside", "ObjectA_id": "1", "ObjectB_id": 2}]}
    refined = validate_refined_config(original, good)
    assert refined["objects"][1] == {"id": 2, "item": "barn", "reference": True}
    assert refined["relation"][0]["ObjectA_id"] == 1
    bad_cases = [
        ({"objects": []}, "non-empty"),
        ({"objects": [{"id": 1, "item": "cow"}], "relation": good["relation"]}, "changed color"),
        ({"objects": good["objects"], "relation": [{"name": "inside", "ObjectA_id": "?", "ObjectB_id": 2}]},
         "ObjectA_id='\\?'"),
        ({"objects": good["objects"], "relation": [{"name": "inside", "ObjectA_id": 1, "ObjectB_id": 5}]},
         "missing object 5"),
        ({"objects": [{"id": 1, "item": "cow", "color": "brown"}, {"id": 3, "item": "barn"}],
          "relation": good["relation"]}, "not 1..2"),
        ({"objects": [{"id": 1, "item": "cow", "color": "brown", "style": "Apple"}, {"id": 2, "item": "barn"}],
          "relation": good["relation"]}, "gained field"),
        ({"objects": [{"id": 1, "item": "cow", "color": "brown"}, {"id": 2, "item": "barn", "color": "red"}],
          "relation": good["relation"]}, "has field"),
        ({**good, "mood": "happy"}, "top-level"),
    ]
    for bad, message in bad_cases:
        with pytest.raises(ParseFailure, match=message):
            validate_refined_config(original, json.loads(json.dumps(bad)))


def test_config_from_imported_concepts():
    concepts, config = config_from_concepts(["object", "color", "object", "spatial"], ["dog", "red", "cat", "top"])
    assert [o["item"] for o in config["objects"]] == ["dog", "cat"]
    assert config["relation"][0]["ObjectA_id"] == 1 and config["objects"][0]["color"] == "red"
    # concepts keep the input order, because the official questions are aligned with it
    assert [(c["category"], c["target"]) for c in concepts] == [("object", 1), ("color", 1), ("object", 2),
                                                                 ("spatial", 0)]


def test_plurals():
    assert [plural(w) for w in ("oak tree", "volcano", "butterfly", "bus", "woman", "sheep", "dirt road")] == [
        "oak trees", "volcanoes", "butterflies", "buses", "women", "sheep", "dirt roads"]
