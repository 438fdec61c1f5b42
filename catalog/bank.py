"""Skill exemplar banks: the AdaptMI `bank.json` format, storage as a catalog of kind "bank", the bundled bank.

A bank is a list of skills (coarse skills, optionally with the fine labels that were merged into each) and,
per coarse skill, exemplars (question + worked answer): the paper's Skill Exemplar Repository
(docs/methods.md#skill-bank).

Design choices
- In the store a bank is an ordinary content-addressed catalog (`catalogs.kind = "bank"`): coarse skills are
  `catalog_entries` rows with `status = "coarse"`, fine labels are rows with `status = "fine"` and
  `parent` = their coarse skill, and every exemplar is an `exemplars` row whose `skill` is the coarse skill.
  No new table is needed.
- AdaptMI JSON (`{"skills": [...], "example_nums": {...}, "skill_dict": {name: [{question, answer}]}}`) round-
  trips without loss: skill order, `example_nums` values (even when they disagree with the exemplar count),
  skills that appear only in `skill_dict`, extra keys on exemplars and unknown top-level keys are all kept
  (in `extra` / `meta`) and written back.
- Provenance of extracted banks (the model and prompt versions behind each label, the fine label, the source
  item) lives in `exemplar.extra["provenance"]` and is left out of AdaptMI exports unless asked for.
- The `bundled` bank is built from the bundled math set's known skills (train split only), so the solver can
  be evaluated on the test split without any model in the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillweave.errors import NotFound, UsageError
from skillweave.store import queries

BANK_KIND = "bank"
_CORE_EXEMPLAR_KEYS = ("question", "answer")


@dataclass
class BankSkill:
    name: str
    subject: str = ""
    definition: str = ""
    fine: list[str] = field(default_factory=list)  # fine-grained labels merged into this skill
    example_num: int | None = None  # the AdaptMI `example_nums` value as imported (None: count the exemplars)
    listed: bool = True  # present in the AdaptMI `skills` list (False: only a `skill_dict` key)
    extra: dict = field(default_factory=dict)


@dataclass
class Exemplar:
    skill: str
    question: str
    answer: str
    fields: dict = field(default_factory=dict)  # other keys of the AdaptMI exemplar object, kept verbatim
    provenance: dict = field(default_factory=dict)  # model, prompt versions, fine label, source item
    source_item_id: str | None = None


@dataclass
class Bank:
    skills: list[BankSkill]
    exemplars: list[Exemplar]
    meta: dict = field(default_factory=dict)
    catalog_id: str | None = None
    name: str = ""

    def skill_names(self) -> list[str]:
        return [s.name for s in self.skills]

    def by_skill(self) -> dict[str, list[Exemplar]]:
        out: dict[str, list[Exemplar]] = {s.name: [] for s in self.skills}
        for x in self.exemplars:
            out.setdefault(x.skill, []).append(x)
        return out

    def skill(self, name: str) -> BankSkill:
        for s in self.skills:
            if s.name == name:
                return s
        raise NotFound(f"bank has no skill '{name}'; known: {', '.join(self.skill_names()[:20])}")

    def summary(self) -> list[dict]:
        counts = self.by_skill()
        return [
            {
                "skill": s.name,
                "subject": s.subject,
                "exemplars": len(counts.get(s.name, [])),
                "fine_labels": len(s.fine),
                "definition": s.definition,
            }
            for s in self.skills
        ]


# ---- AdaptMI JSON ------------------------------------------------------------------------------------
def bank_from_adaptmi(data: Any, *, source: str = "") -> Bank:
    """Parse an AdaptMI bank object; raises UsageError naming what is wrong."""
    where = f" in '{source}'" if source else ""
    if not isinstance(data, dict) or "skill_dict" not in data and "skills" not in data:
        raise UsageError(
            f"not an AdaptMI skill bank{where}: expected an object with 'skills' and 'skill_dict'"
        )
    names = data.get("skills") or []
    skill_dict = data.get("skill_dict") or {}
    example_nums = data.get("example_nums") or {}
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"'skills'{where} must be a list of skill names")
    if not isinstance(skill_dict, dict):
        raise UsageError(f"'skill_dict'{where} must map skill names to lists of exemplars")
    skills: list[BankSkill] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:  # keep duplicates' positions: AdaptMI lists are unique, but do not lose data
            skills.append(BankSkill(name=name, extra={"duplicate": True}))
            continue
        seen.add(name)
        skills.append(BankSkill(name=name, example_num=example_nums.get(name)))
    for name in skill_dict:
        if name not in seen:
            seen.add(name)
            skills.append(BankSkill(name=name, example_num=example_nums.get(name), listed=False))
    orphan_nums = {k: v for k, v in example_nums.items() if k not in seen}
    exemplars: list[Exemplar] = []
    for name, rows in skill_dict.items():
        if not isinstance(rows, list):
            raise UsageError(f"skill_dict['{name}']{where} must be a list of exemplar objects")
        for row in rows:
            if not isinstance(row, dict):
                raise UsageError(f"an exemplar of '{name}'{where} is not an object: {row!r:.80}")
            fields = {k: v for k, v in row.items() if k not in _CORE_EXEMPLAR_KEYS}
            missing = [k for k in _CORE_EXEMPLAR_KEYS if k not in row]
            if missing or list(row)[:2] != list(_CORE_EXEMPLAR_KEYS):
                fields["_keys"] = list(row)  # exact key order / absent keys, restored on export
            exemplars.append(
                Exemplar(skill=name, question=row.get("question"), answer=row.get("answer"), fields=fields)
            )
    meta = {"format": "adaptmi"}
    other = {k: v for k, v in data.items() if k not in ("skills", "example_nums", "skill_dict")}
    if other:
        meta["other_fields"] = other
    if orphan_nums:
        meta["orphan_example_nums"] = orphan_nums
    meta["has"] = [k for k in ("skills", "example_nums", "skill_dict") if k in data]
    meta["skill_dict_order"] = list(skill_dict)
    return Bank(skills=skills, exemplars=exemplars, meta=meta)


def bank_to_adaptmi(bank: Bank, *, include_provenance: bool = False) -> dict:
    """The AdaptMI object; a bank imported from AdaptMI JSON comes back equal to the file it came from."""
    by_skill: dict[str, list[dict]] = {}
    for x in bank.exemplars:
        row = {"question": x.question, "answer": x.answer}
        fields = dict(x.fields)
        keys = fields.pop("_keys", None)
        row.update(fields)
        if include_provenance and x.provenance:
            row["provenance"] = x.provenance
        if keys is not None:
            row = {k: row[k] for k in keys if k in row}
        by_skill.setdefault(x.skill, []).append(row)
    unique = [s for s in bank.skills if not s.extra.get("duplicate")]
    imported = bank.meta.get("format") == "adaptmi"
    has = bank.meta.get("has", ["skills", "example_nums", "skill_dict"])
    out: dict[str, Any] = {}
    if "skills" in has:
        out["skills"] = [s.name for s in bank.skills if s.listed]
    if "example_nums" in has:
        if imported:  # exactly the imported values, including ones that disagree with the exemplar count
            nums = {s.name: s.example_num for s in unique if s.example_num is not None}
            nums.update(bank.meta.get("orphan_example_nums", {}))
        else:
            nums = {s.name: len(by_skill.get(s.name, [])) for s in unique}
        out["example_nums"] = nums
    if "skill_dict" in has:
        order = bank.meta.get("skill_dict_order") if imported else [s.name for s in unique]
        out["skill_dict"] = {name: by_skill.get(name, []) for name in order}
    out.update(bank.meta.get("other_fields", {}))
    return out


def read_bank_json(path: str | Path) -> Bank:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"bank file '{path}' does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"bank file '{path}' is not readable JSON: {exc}") from None
    bank = bank_from_adaptmi(data, source=str(path))
    bank.name = path.stem
    return bank


def write_bank_json(bank: Bank, path: str | Path, *, include_provenance: bool = False) -> Path:
    path = Path(path)
    path.write_text(
        json.dumps(bank_to_adaptmi(bank, include_provenance=include_provenance), ensure_ascii=False, indent=2)
        + "\n",
        encoding="utf-8",
    )
    return path


def retrieval_map(bank: Bank) -> dict[str, list[str]]:
    """Question text -> the skill of each of its exemplars, in bank order, repeats kept (the released
    AdaptMI retrieval files list a skill twice where a question was filed twice under it)."""
    out: dict[str, list[str]] = {}
    for x in bank.exemplars:
        out.setdefault(x.question, []).append(x.skill)
    return out


def retrieval_document(bank: Bank) -> dict[str, dict[str, list[str]]]:
    """The AdaptMI retrieval file (`skill_retrieval/.../{split}.json`): `{"question2skill": {question: [skill]}}`."""
    return {"question2skill": retrieval_map(bank)}


def read_retrieval_json(path: str | Path) -> dict[str, list[str]]:
    """Question -> skills from an AdaptMI retrieval file (`{"question2skill": {...}}`, as released) or from a bare
    `{question: [skills]}` object (skillweave's export before it was wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"retrieval file '{path}' does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"retrieval file '{path}' is not readable JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("question2skill"), dict):
        data = data["question2skill"]
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise UsageError(
            f"retrieval file '{path}' is not an AdaptMI retrieval file; expected "
            '{"question2skill": {"<question>": ["<skill>", ...]}}'
        )
    return {str(q): list(v) for q, v in data.items()}


# ---- the store -----------------------------------------------------------------------------------------
def save_bank(store, bank: Bank, name: str, *, source: str = "") -> str:
    """Store a bank as a catalog of kind "bank"; returns its content-addressed catalog id."""
    entries: list[dict] = []
    for s in bank.skills:
        extra = {**s.extra, "listed": s.listed}
        if s.example_num is not None:
            extra["example_num"] = s.example_num
        entries.append(
            {
                "name": s.name,
                "category": s.subject,
                "definition": s.definition,
                "status": "coarse",
                "extra": extra,
            }
        )
        for fine in s.fine:
            entries.append({"name": fine, "category": s.subject, "status": "fine", "parent": s.name})
    exemplars = [
        {
            "skill": x.skill,
            "question": x.question,
            "answer": x.answer,
            "source_item_id": x.source_item_id,
            "extra": {
                **({"fields": x.fields} if x.fields else {}),
                **({"provenance": x.provenance} if x.provenance else {}),
            },
        }
        for x in bank.exemplars
    ]
    catalog_id = store.save_catalog(
        name, BANK_KIND, entries, source=source, meta=bank.meta, exemplars=exemplars
    )
    bank.catalog_id, bank.name = catalog_id, name
    return catalog_id


def bank_from_catalog(catalog: dict) -> Bank:
    if catalog["kind"] != BANK_KIND:
        raise UsageError(f"catalog '{catalog['id']}' is a {catalog['kind']} catalog, not a skill bank")
    skills: list[BankSkill] = []
    by_name: dict[str, BankSkill] = {}
    for e in catalog["entries"]:
        if e["status"] == "fine":
            parent = by_name.get(e["parent"])
            if parent is not None:
                parent.fine.append(e["name"])
            continue
        extra = dict(e["extra"])
        listed = extra.pop("listed", True)
        example_num = extra.pop("example_num", None)
        skill = BankSkill(
            name=e["name"],
            subject=e["category"] or "",
            definition=e["definition"] or "",
            example_num=example_num,
            listed=listed,
            extra=extra,
        )
        skills.append(skill)
        by_name.setdefault(skill.name, skill)
    exemplars = [
        Exemplar(
            skill=x["skill"],
            question=x["question"],
            answer=x["answer"],
            fields=x["extra"].get("fields", {}),
            provenance=x["extra"].get("provenance", {}),
            source_item_id=x["source_item_id"],
        )
        for x in catalog["exemplars"]
    ]
    return Bank(
        skills=skills,
        exemplars=exemplars,
        meta=catalog["meta"],
        catalog_id=catalog["id"],
        name=catalog["name"],
    )


def list_banks(store) -> list[dict]:
    rows = queries.catalogs_of_kinds(store, [BANK_KIND])
    out = []
    for r in rows:
        n_skills = queries.catalog_entry_count(store, r["id"], status="coarse")
        n_ex = queries.exemplar_count(store, r["id"])
        out.append(
            {
                "id": r["id"],
                "name": r["name"],
                "skills": n_skills,
                "exemplars": n_ex,
                "source": r["source"],
                "created_at": r["created_at"],
            }
        )
    return out


def load_bank(store, ref: str) -> Bank:
    """A bank by reference: `bundled`, a catalog id, a stored bank name (newest wins) or an AdaptMI JSON path."""
    if ref == "bundled":
        return bundled_bank()
    if store is not None:
        if queries.catalog_exists(store, ref):
            return bank_from_catalog(store.get_catalog(ref))
        newest = queries.newest_catalog_id(store, ref, BANK_KIND)
        if newest:
            return bank_from_catalog(store.get_catalog(newest))
    if Path(ref).suffix == ".json" or Path(ref).is_file():
        return read_bank_json(ref)
    raise NotFound(
        f"no skill bank '{ref}': pass 'bundled', a bank JSON file, or a stored bank id/name "
        "(`skillweave skills list` shows them)"
    )


# ---- the bundled bank ----------------------------------------------------------------------------------
def bundled_bank(split: str = "train") -> Bank:
    """The bank of the bundled math set's true skills, from its `split` questions (train by default)."""
    from skillweave.catalog.mathdata import SKILLS, bundled_questions

    skills = [
        BankSkill(name=name, subject=subject, definition=definition)
        for name, (subject, definition) in SKILLS.items()
    ]
    exemplars = [
        Exemplar(
            skill=q["skill"],
            question=q["question"],
            answer=q["solution"],
            provenance={"source": "bundled", "question_id": q["id"], "final_answer": q["answer"]},
        )
        for q in bundled_questions(split)
    ]
    return Bank(
        skills=skills,
        exemplars=exemplars,
        meta={"format": "skillweave", "source": "bundled", "split": split},
        name="bundled",
    )
