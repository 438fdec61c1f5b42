"""ConceptMix concept catalog, seeded difficulty-k sampler and configuration helpers.

What they compute: docs/methods.md#conceptmix-catalog, docs/methods.md#conceptmix-sampler and
docs/methods.md#conceptmix-refinement.

Design choices:
- The packaged catalog (`catalog/data/conceptmix/*.json`) uses the official file layout
  (`{"category", "description", "skill": {value: detail}}`) with our own wording, plus an optional
  `question` template per category; one loader reads both ours and the official `config/*.json` files.
  Placeholders are normalised on load: the official `{skill}`/`{skills}` become `{value}`.
- The sampler follows the paper: one base object, each of the k extra slots becomes another (distinct)
  object with probability 0.25, the remaining slots are categories drawn *with replacement* from the
  non-object categories, the whole list redrawn while a category occurs more often than there are objects.
  At most one style is enforced (the upstream guard never fired, bug B). Both numbers are parameters.
- Every record draws from its own `random.Random` seeded by a hash of (seed, k, index, attempt), so a record
  can be resampled or resumed alone and a run is reproducible regardless of concurrency.
- A configuration is the upstream refined-config JSON: `objects` (id, item, attributes), `relation`
  (name, description, ObjectA_id, ObjectB_id) and `style`. Objects added only as references carry
  `"reference": true` and are never concepts.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillweave.errors import ConfigError, ParseFailure, UsageError
from skillweave.store import stable_id

CATEGORIES = ("object", "color", "number", "shape", "size", "texture", "spatial", "style")
ATTRIBUTE_CATEGORIES = ("color", "number", "shape", "size", "texture")
DATA_DIR = Path(__file__).parent / "data" / "conceptmix"
PLACEHOLDER = "?"
# Neutral things added as references when a relation or a relative size needs a second object (rule mode).
REFERENCE_OBJECTS = ("box", "table", "tree", "rock", "bench", "lamp")
# Fields an LLM-added reference object may carry (upstream references sometimes say "size": "normal").
REFERENCE_FIELDS = {"id", "item", "size", "reference"}

DEFAULT_QUESTIONS = {
    "object": "Is there at least one {object} in the image?",
    "color": "Is the {object} {value} in color?",
    "number": "Are there exactly {value} {objects} in the image?",
    "shape": "Does the {object} have the shape of a {value}?",
    "size": "Is the {object} {value} compared with the other things in the image?",
    "texture": "Does the {object} have a {value} texture?",
    "spatial": "In the image, is it true that {detail}?",
    "style": "Is the image in the {value} style?",
}

_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "sheep": "sheep", "sushi": "sushi", "broccoli": "broccoli",
                      "cactus": "cacti", "mouse": "mice", "fish": "fish", "deer": "deer", "child": "children"}


def plural(noun: str) -> str:
    """English plural of an object name ("oak tree" -> "oak trees", "volcano" -> "volcanoes")."""
    head, _, last = noun.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last in _IRREGULAR_PLURALS:
        return prefix + _IRREGULAR_PLURALS[last]
    if re.search(r"(s|x|z|ch|sh)$", last) or last.endswith("ano"):
        return f"{prefix}{last}es"
    if re.search(r"[^aeiou]y$", last):
        return f"{prefix}{last[:-1]}ies"
    return f"{prefix}{last}s"


def with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


@dataclass
class ConceptCategory:
    """One category: a description template, an optional question template, and value -> detail."""

    name: str
    description: str
    values: dict[str, str]
    question: str = ""

    def question_template(self) -> str:
        return self.question or DEFAULT_QUESTIONS.get(self.name, "Does the image show {value}?")


@dataclass
class ConceptCatalog:
    """The eight ConceptMix categories (a custom catalog may omit some, but needs objects)."""

    categories: dict[str, ConceptCategory]
    source: str = ""

    def __post_init__(self) -> None:
        if "object" not in self.categories or not self.categories["object"].values:
            raise ConfigError(f"concept catalog from '{self.source}' has no object values; add an object.json file")

    def values(self, category: str) -> list[str]:
        return list(self.categories[category].values)

    def other_categories(self) -> list[str]:
        return [c for c in CATEGORIES if c != "object" and c in self.categories and self.categories[c].values]

    def to_entries(self) -> list[dict]:
        """Rows for `Store.save_catalog` (kind 'concepts'): one per value; templates ride in `extra`."""
        rows = []
        for cat in self.categories.values():
            for value, detail in cat.values.items():
                rows.append({"name": value, "category": cat.name, "definition": detail,
                             "extra": {"description": cat.description, "question": cat.question}})
        return rows

    @classmethod
    def from_entries(cls, entries: list[dict], source: str = "store") -> ConceptCatalog:
        categories: dict[str, ConceptCategory] = {}
        for e in entries:
            extra = e.get("extra") or {}
            cat = categories.setdefault(e["category"], ConceptCategory(
                e["category"], extra.get("description", ""), {}, extra.get("question", "")))
            cat.values[e["name"]] = e.get("definition") or ""
        return cls(categories, source)


def _normalise_template(text: str) -> str:
    # Official files: {skills} is the plural object name (object.json), {skill} the value.
    return text.replace("{skills}", "{objects}").replace("{skill}", "{value}").strip()


def load_category_file(path: str | Path) -> ConceptCategory:
    """Read one category file in the official layout (ours adds an optional `question`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read concept category file '{path}': {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("skill"), dict) or "category" not in data:
        raise UsageError(f"'{path}' is not a ConceptMix category file; expected "
                         '{"category": ..., "description": ..., "skill": {value: detail}}')
    values = {str(k): _normalise_template(str(v or "")) for k, v in data["skill"].items()}
    return ConceptCategory(str(data["category"]), _normalise_template(str(data.get("description", ""))), values,
                           _normalise_template(str(data.get("question", ""))))


def load_concept_catalog(folder: str | Path | None = None) -> ConceptCatalog:
    """Load every `<category>.json` in a folder: the packaged catalog by default, or the official `config/`."""
    folder = Path(folder) if folder else DATA_DIR
    if not folder.is_dir():
        raise UsageError(f"concept catalog folder '{folder}' does not exist; pass the official config/ folder")
    categories = {}
    for path in sorted(folder.glob("*.json")):
        cat = load_category_file(path)
        if cat.name not in CATEGORIES:
            raise UsageError(f"'{path}' has unknown category '{cat.name}'; expected one of {', '.join(CATEGORIES)}")
        categories[cat.name] = cat
    if not categories:
        raise UsageError(f"no category .json files in '{folder}'")
    return ConceptCatalog({name: categories[name] for name in CATEGORIES if name in categories}, str(folder))


# ---- sampling -------------------------------------------------------------------------------------------
@dataclass
class ConceptSample:
    """k+1 concepts and the (unrefined) configuration they live in."""

    k: int
    concepts: list[dict]  # {"category", "value", "target"}: target = object id, relation index, or None
    config: dict = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return [c["category"] for c in self.concepts]

    @property
    def skills(self) -> list[str]:
        return [c["value"] for c in self.concepts]


def record_rng(seed: int, k: int, index: int, attempt: int = 0) -> random.Random:
    """The random stream of one record (attempt > 0 after a conflict resample)."""
    return random.Random(int(stable_id("conceptmix", seed, k, index, attempt), 16))


def sample_concepts(catalog: ConceptCatalog, k: int, rng: random.Random, *, p_extra_object: float = 0.25,
                    max_style: int = 1, max_redraws: int = 10_000) -> ConceptSample:
    """Draw k+1 concepts: a base object, extra objects w.p. p each, other categories under the count constraint."""
    if k < 1:
        raise ConfigError(f"difficulty k={k} is invalid; use k >= 1")
    object_values = catalog.values("object")
    num_objects = 1 + sum(rng.random() < p_extra_object for _ in range(k))
    if num_objects > len(object_values):
        raise ConfigError(f"k={k} may need {num_objects} distinct objects but the catalog has {len(object_values)}")
    items = rng.sample(object_values, num_objects)
    k_other = k + 1 - num_objects
    others = catalog.other_categories()
    for _ in range(max_redraws):
        drawn = rng.choices(others, k=k_other) if k_other else []
        counts = Counter(drawn)
        if all(n <= num_objects for n in counts.values()) and counts["style"] <= max_style:
            break
    else:
        raise ConfigError(f"no category draw for k={k} satisfies the constraints; lower k or add categories")
    objects = [{"id": i + 1, "item": item} for i, item in enumerate(items)]
    config: dict[str, Any] = {"objects": objects}
    concepts = [{"category": "object", "value": o["item"], "target": o["id"]} for o in objects]
    for category in drawn:
        value = rng.choice(catalog.values(category))
        if category == "style":
            config["style"] = value
            concepts.append({"category": "style", "value": value, "target": None})
        elif category == "spatial":
            relations = config.setdefault("relation", [])
            relations.append({"name": value, "description": catalog.categories["spatial"].values[value],
                              "ObjectA_id": PLACEHOLDER, "ObjectB_id": PLACEHOLDER})
            concepts.append({"category": "spatial", "value": value, "target": len(relations) - 1})
        else:
            free = [o for o in objects if category not in o]
            target = rng.choice(free)
            target[category] = value
            concepts.append({"category": category, "value": value, "target": target["id"]})
    return ConceptSample(k, concepts, config)


def sample_record(catalog: ConceptCatalog, k: int, seed: int, index: int, attempt: int = 0,
                  **options: Any) -> ConceptSample:
    return sample_concepts(catalog, k, record_rng(seed, k, index, attempt), **options)


# ---- configurations -------------------------------------------------------------------------------------
def _object(config: dict, object_id: Any) -> dict:
    for o in config.get("objects", []):
        if str(o.get("id")) == str(object_id):
            return o
    raise ParseFailure(f"configuration has no object with id {object_id!r}")


def object_phrase(config: dict, object_id: Any) -> str:
    """The bare object name; templates say "the {object}" (one instance) or "{objects}" (the plural)."""
    return _object(config, object_id)["item"]


def relation_names(config: dict, relation: dict) -> tuple[str, str]:
    """Noun phrases for ObjectA / ObjectB; the same object on both sides reads as a second instance of it.

    Unfilled endpoints (`?`, before refinement) read as "object A" / "object B".
    """
    if PLACEHOLDER in (str(relation["ObjectA_id"]), str(relation["ObjectB_id"])):
        return "object A", "object B"
    a = object_phrase(config, relation["ObjectA_id"])
    b = object_phrase(config, relation["ObjectB_id"])
    if str(relation["ObjectA_id"]) == str(relation["ObjectB_id"]):
        return f"the {a}", f"another {b}"
    return f"the {a}", f"the {b}"


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _slots(catalog: ConceptCatalog, concept: dict, config: dict) -> dict[str, str]:
    category, value = concept["category"], concept["value"]
    slots = {"value": value}
    if category == "spatial":
        relation = config["relation"][concept["target"]]
        a, b = relation_names(config, relation)
        detail = catalog.categories["spatial"].values.get(value) or f"{{ObjectA}} is {value} {{ObjectB}}"
        detail = detail.strip().rstrip(".")
        slots.update(ObjectA=a, ObjectB=b, detail=_fill(detail, ObjectA=a, ObjectB=b))
    elif concept["target"] is not None:
        obj = _object(config, concept["target"])
        slots.update(object=object_phrase(config, obj["id"]), objects=plural(obj["item"]))
    return slots


def describe_concept(catalog: ConceptCatalog, concept: dict, config: dict) -> str:
    """The concept as a plain property sentence, from the category's description template.

    A spatial value with its own detail text (both catalogs have one) is described by that detail.
    """
    slots = _slots(catalog, concept, config)
    text = slots["detail"] if concept["category"] == "spatial" and slots.get("detail") else _fill(
        catalog.categories[concept["category"]].description, **slots)
    return text.strip().rstrip(".")


def template_question(catalog: ConceptCatalog, concept: dict, config: dict) -> str:
    """A yes/no question for one concept from the category's question template (no LLM)."""
    return _fill(catalog.categories[concept["category"]].question_template(), **_slots(catalog, concept, config))


def complete_config_by_rule(config: dict, concepts: list[dict], rng: random.Random) -> dict:
    """Fill relation placeholders and add reference objects without an LLM (the `--refine rule` mode).

    A relation picks two distinct sampled objects when there are two, otherwise adds a neutral reference
    object; a relative size with no second object also gets one.
    """
    refined = json.loads(json.dumps(config))
    objects = refined["objects"]
    taken = {o["item"] for o in objects}

    def add_reference() -> int:
        item = rng.choice([r for r in REFERENCE_OBJECTS if r not in taken])
        taken.add(item)
        objects.append({"id": len(objects) + 1, "item": item, "reference": True})
        return len(objects)

    for relation in refined.get("relation", []):
        sampled = [o["id"] for o in objects if not o.get("reference")]
        if len(sampled) >= 2:
            a, b = rng.sample(sampled, 2)
        else:
            a, b = sampled[0], add_reference()
        relation["ObjectA_id"], relation["ObjectB_id"] = a, b
    if any(c["category"] == "size" for c in concepts) and len(objects) == 1:
        add_reference()
    return refined


def refined_config_schema():
    """The typed shape of a refined configuration (ConceptMix refine, turn 1): a non-empty `objects` list of
    `{id, item, ...attributes}`, optional `relation` entries and `style`, no other top-level field. What the
    schema cannot say (objects kept unchanged, ids 1..n, references bare) is `validate_refined_config`'s."""
    from pydantic import BaseModel, ConfigDict, Field

    class ConfigObject(BaseModel):
        model_config = ConfigDict(extra="allow")
        id: int
        item: str

    class RefinedConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        objects: list[ConfigObject] = Field(min_length=1)
        relation: list[dict] | None = None
        style: str | None = None

    return RefinedConfig


def validate_refined_config(original: dict, refined: Any) -> dict:
    """Check an LLM-refined configuration against the sampled one; mark added objects as references.

    Raises ParseFailure naming the first problem (a missing object, a changed attribute, a bad id, a `?` left).
    """
    if not isinstance(refined, dict) or not isinstance(refined.get("objects"), list) or not refined["objects"]:
        raise ParseFailure("refined configuration is not a JSON object with a non-empty 'objects' list")
    objects = refined["objects"]
    ids = []
    for o in objects:
        if not isinstance(o, dict) or "item" not in o or "id" not in o:
            raise ParseFailure(f"refined object {o!r} lacks 'id' or 'item'")
        try:
            ids.append(int(o["id"]))
        except (TypeError, ValueError):
            raise ParseFailure(f"refined object id {o['id']!r} is not an integer") from None
    extra = set(refined) - {"objects", "relation", "style"}
    if extra:
        raise ParseFailure(f"refined configuration adds top-level field(s) {sorted(extra)}")
    if sorted(ids) != list(range(1, len(objects) + 1)):
        raise ParseFailure(f"refined object ids {ids} are not 1..{len(objects)}")
    by_id = {int(o["id"]): o for o in objects}
    for o in original["objects"]:
        got = by_id.get(int(o["id"]))
        if got is None:
            raise ParseFailure(f"refined configuration dropped object {o['id']} ({o['item']})")
        for key, value in o.items():
            if str(got.get(key)) != str(value):
                raise ParseFailure(f"refined object {o['id']} changed {key} from {value!r} to {got.get(key)!r}")
        added = set(got) - set(o) - {"reference"}
        if added:
            raise ParseFailure(f"refined object {o['id']} gained field(s) {sorted(added)}; only references may be added")
    original_ids = {int(o["id"]) for o in original["objects"]}
    for o in objects:
        o["id"] = int(o["id"])
        if o["id"] not in original_ids:
            extra = set(o) - REFERENCE_FIELDS
            if extra:
                raise ParseFailure(f"added reference object {o['id']} has field(s) {sorted(extra)}; "
                                   f"a reference has only {sorted(REFERENCE_FIELDS - {'reference'})}")
            o["reference"] = True
    relations = refined.get("relation") or []
    wanted = original.get("relation") or []
    if len(relations) != len(wanted):
        raise ParseFailure(f"refined configuration has {len(relations)} relations, expected {len(wanted)}")
    for got, want in zip(relations, wanted, strict=True):
        if not isinstance(got, dict) or got.get("name") != want["name"]:
            raise ParseFailure(f"relation {want['name']!r} was renamed or reordered")
        for side in ("ObjectA_id", "ObjectB_id"):
            try:
                got[side] = int(got.get(side))
            except (TypeError, ValueError):
                raise ParseFailure(f"relation {want['name']!r} has {side}={got.get(side)!r}; expected an object id") from None
            if got[side] not in by_id:
                raise ParseFailure(f"relation {want['name']!r} points at missing object {got[side]}")
        got.setdefault("description", want.get("description", ""))
    if original.get("style") and refined.get("style") != original["style"]:
        raise ParseFailure(f"refined configuration changed the style to {refined.get('style')!r}")
    return refined


def config_from_concepts(categories: list[str], skills: list[str]) -> tuple[list[dict], dict]:
    """Rebuild concepts and a configuration from an imported (categories, skills) pair (no refined config).

    Attributes attach to the first object that lacks that category; relations join the first two objects
    (or the object and a generic reference), as a best effort for renderers that need a layout.
    """
    objects: list[dict] = []
    config: dict[str, Any] = {"objects": objects}
    for category, value in zip(categories, skills, strict=True):
        if category == "object":
            objects.append({"id": len(objects) + 1, "item": value})
    if not objects:
        objects.append({"id": 1, "item": "thing", "reference": True})
    concepts: list[dict] = []
    seen_objects = 0
    for category, value in zip(categories, skills, strict=True):
        if category == "object":
            seen_objects += 1
            concepts.append({"category": category, "value": value, "target": seen_objects})
        elif category == "style":
            config["style"] = value
            concepts.append({"category": category, "value": value, "target": None})
        elif category == "spatial":
            if len(objects) < 2:
                objects.append({"id": len(objects) + 1, "item": "box", "reference": True})
            config.setdefault("relation", []).append(
                {"name": value, "description": "", "ObjectA_id": objects[0]["id"], "ObjectB_id": objects[1]["id"]})
            concepts.append({"category": category, "value": value, "target": len(config["relation"]) - 1})
        else:
            target = next((o for o in objects if category not in o), objects[0])
            target[category] = value
            concepts.append({"category": category, "value": value, "target": target["id"]})
    return concepts, config


def question_categories(questions: list[str], categories: list[str]) -> list[str | None]:
    """The category each question position tests; None for an empty question.

    The released prompt sets interleave empty strings among the questions (128 of their 2,100 records); the
    non-empty questions, in order, match `categories` one to one. When their count differs from the categories'
    (one released record has a question fewer), every non-empty question is marked "unaligned".
    """
    asked = [i for i, q in enumerate(questions) if str(q).strip()]
    out: list[str | None] = [None] * len(questions)
    for n, i in enumerate(asked):
        out[i] = categories[n] if len(asked) == len(categories) else "unaligned"
    return out


# ---- official released prompt sets ----------------------------------------------------------------------
SENTENCES_NAME = re.compile(r"(?:(\d+)_)?sentences_k=(\d+)\.json$")


def load_sentence_file(path: str | Path) -> tuple[int, list[dict]]:
    """Read `{N}_sentences_k={k}.json` (`[{index, sentence, categories, skills, question[]}]`).

    Returns k (from the file name, else from the records) and records with the empty questions kept, so
    positions stay aligned with `categories`; a sibling `{N}_refined_config_k={k}.json`, when present,
    adds each record's configuration under `config`.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read ConceptMix prompt file '{path}': {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UsageError(f"'{path}' is not a ConceptMix prompt set; expected a JSON list of "
                         "{index, sentence, categories, skills, question}")
    match = SENTENCES_NAME.search(path.name)
    records = []
    for position, r in enumerate(data):
        missing = [key for key in ("sentence", "categories", "skills", "question") if key not in r]
        if missing:
            raise UsageError(f"'{path}' record {position} lacks {', '.join(missing)}")
        if len(r["categories"]) != len(r["skills"]):
            raise UsageError(f"'{path}' record {r.get('index', position)}: categories and skills differ in length")
        records.append({"index": r.get("index", position + 1), "sentence": str(r["sentence"]),
                        "categories": list(r["categories"]), "skills": [str(s) for s in r["skills"]],
                        "question": [str(q).strip() for q in r["question"]]})
    k = int(match.group(2)) if match else max((len(r["categories"]) - 1 for r in records), default=1)
    configs_path = path.with_name(path.name.replace("sentences", "refined_config"))
    if match and configs_path.exists():
        try:
            configs = {c.get("index"): c for c in json.loads(configs_path.read_text())}
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            raise UsageError(f"cannot read refined configurations '{configs_path}': {exc}") from None
        for r in records:
            if r["index"] in configs:
                r["config"] = {key: v for key, v in configs[r["index"]].items() if key != "index"}
    return k, records
