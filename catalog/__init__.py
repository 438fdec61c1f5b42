"""Skill catalogs: rows `name, category, definition, example, status`, with loaders and a category split.

Loaders: the official Skill-Mix `skills.csv` (columns `category, skill, definition, example, comments,
status, added by`; rows whose status is remove / in review / maybe are dropped) and `topics.txt` (one topic a
line); plain one-name-per-line text; JSON lists of objects. The bundled catalog (44 skills, 33 topics) is our
own wording, written to exercise the same categories as the public Skill-Mix release.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from skillweave.catalog.textfiles import MAX_LINE, read_csv, read_text
from skillweave.errors import UsageError

DATA_DIR = Path(__file__).parent / "data"
EXCLUDED_STATUS = {"remove", "in review", "maybe"}


@dataclass(frozen=True)
class Skill:
    name: str
    category: str = ""
    definition: str = ""
    example: str = ""
    status: str = ""

    def as_dict(self) -> dict:
        # the fields in order, as `dataclasses.asdict` gives them (all strings: nothing to copy deeply), without
        # its recursive walk: a plan calls this for every skill of every item
        return dict(self.__dict__)


def load_skills_csv(path: str | Path, *, status_filter: bool = True) -> list[Skill]:
    """Read a Skill-Mix style skills.csv the way the official `get_skills_dict` does, in file order.

    A row is dropped when its `status` cell is exactly `remove`, `in review` or `maybe` (compared as written,
    as upstream does); the name is the stripped `skill` cell, definition and example are kept as written (the
    official prompts quote them verbatim, trailing spaces included); a name that appears twice keeps its first
    position and its last row's fields (upstream keys a dict by name). Rows with an empty name are skipped.
    """
    path = Path(path)
    rows = read_csv(path, "skills")
    fieldnames = list(rows[0]) if rows else []
    if "skill" not in fieldnames:
        raise UsageError(f"skills file '{path}' needs a 'skill' column (found: {fieldnames or None})")
    by_name: dict[str, Skill] = {}
    for row in rows:
        status = row.get("status") or ""
        name = (row.get("skill") or "").strip()
        if not name or (status_filter and status in EXCLUDED_STATUS):
            continue
        by_name[name] = Skill(name=name, category=(row.get("category") or "").strip(),
                              definition=row.get("definition") or "", example=row.get("example") or "",
                              status=status.strip().lower())
    skills = list(by_name.values())
    if not skills:
        raise UsageError(f"skills file '{path}' has no usable rows")
    return skills


def load_lines(path: str | Path, what: str = "topics") -> list[str]:
    """One entry per line, blanks dropped (topics.txt, Instruct-SkillMix skills.txt)."""
    path = Path(path)
    lines = [line.strip() for line in read_text(path, what, max_line=MAX_LINE).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise UsageError(f"{what} file '{path}' is empty")
    return lines


def load_skills(path: str | Path) -> list[Skill]:
    """Dispatch on the extension: .csv (Skill-Mix), .json (list of objects), anything else one name a line."""
    path = Path(path)
    if path.suffix == ".csv":
        return load_skills_csv(path)
    if path.suffix == ".json":
        try:
            rows = json.loads(read_text(path, "skills"))
        except json.JSONDecodeError as exc:
            raise UsageError(f"skills file '{path}' is not readable JSON: {exc}") from None
        if isinstance(rows, dict) and "skills" in rows:  # AdaptMI bank: {"skills": [...], ...}
            rows = rows["skills"]
        shape = "a JSON list of names or of objects with a 'name' (or 'skill') string"
        if not isinstance(rows, list) or not rows:
            raise UsageError(f"skills file '{path}' must be {shape}")
        for i, r in enumerate(rows):
            name = r if isinstance(r, str) else (r.get("name") or r.get("skill")) if isinstance(r, dict) else None
            fields = [r.get(f, "") for f in ("category", "definition", "example")] if isinstance(r, dict) else []
            if not isinstance(name, str) or not name.strip() or not all(isinstance(f, str) for f in fields):
                raise UsageError(f"skills file '{path}' entry {i + 1} is not a skill; the file must be {shape}")
        return [Skill(name=r) if isinstance(r, str) else Skill(name=r.get("name") or r["skill"],
                                                                category=r.get("category", ""),
                                                                definition=r.get("definition", ""),
                                                                example=r.get("example", ""))
                for r in rows]
    return [Skill(name=name) for name in load_lines(path, "skills")]


def bundled_skills() -> list[Skill]:
    return load_skills_csv(DATA_DIR / "skills.csv")


def bundled_topics() -> list[str]:
    return load_lines(DATA_DIR / "topics.txt")


def split_by_category(skills: list[Skill], train_categories: set[str]) -> tuple[list[Skill], list[Skill]]:
    """Partition skills into (train, held-out) by category (docs/methods.md#skill-composition-data)."""
    unknown = train_categories - {s.category for s in skills}
    if unknown:
        raise UsageError(f"unknown skill categories {sorted(unknown)}; known: {sorted({s.category for s in skills})}")
    train = [s for s in skills if s.category in train_categories]
    return train, [s for s in skills if s.category not in train_categories]


def split_topics(topics: list[str], heldout_fraction: float = 0.5) -> tuple[list[str], list[str]]:
    """Topics have no categories: the first (1 - fraction) in file order train, the rest are held out."""
    cut = round(len(topics) * (1 - heldout_fraction))
    return topics[:cut], topics[cut:]


def iter_combinations(rng, skills: list, k: int, n: int, *, key=None) -> Iterator[list]:
    """The released samplers' combination draw (Skill-Mix's query_random.py, Instruct-SkillMix's driver), one
    combination at a time: n > 0 shuffles one copy of the catalog in place n times with `rng` (a `random.Random`
    or numpy `RandomState`, whichever generator the release uses) and gives the first k each time; n <= 0 gives
    every combination, sorted (by `key`). The caller may go on drawing from the same `rng` after the last one
    (the Skill-Mix index plan, agents/compactplan.py, draws catalog indices with it)."""
    if k > len(skills):
        raise ValueError(f"k={k} exceeds the {len(skills)} skills in the catalog")
    pool = list(skills)
    if n > 0:
        shuffle = rng.shuffle
        for _ in range(n):
            shuffle(pool)
            yield pool[:k]
        return
    from itertools import combinations

    for c in sorted(combinations(pool, k), key=key):
        yield list(c)


def draw_combinations(rng, skills: list, k: int, n: int, *, key=None) -> list[list]:
    """`iter_combinations` as a list: every combination drawn before the caller draws anything else."""
    return list(iter_combinations(rng, skills, k, n, key=key))
