"""Read and write the Instruct-SkillMix stage-1 files: `skills.txt` and `queries.txt` (METHODS §3.1).

Formats
- `skills.txt`: one skill per line, snake_case identifiers such as `marketing_and_promotion`; blank lines and
  `#` comment lines are dropped. Duplicates are kept by default (the released GPT-4 list has 1,142 lines and
  1,132 unique names and the reference sampler shuffles the raw list); `unique=True` drops repeats, first wins.
- `queries.txt`: one block per query type, each block starting with `###`, then a numbered header with the
  bold name, then its definition and examples::

      ### 1. **Information-Seeking**
      Definition: The person wants facts or an explanation about something.
      Examples:
      - "What causes the seasons?"

  The parser splits on `###`; in each block the first `**bold**` run is the name (`query_str`) and the
  definition is the text after the name on the header line, else a `Definition:` line, else the first plain
  line that is not an example. `query_type` = name + ": " + definition, as the reference parser builds it.
  Lines after an `Examples:` line (or lines starting with `Example`) are examples.

Both readers raise UsageError naming the file and what is wrong; the writers produce files the readers (and
the upstream parser) read back identically. `*_entries` helpers convert to catalog rows for `Store.save_catalog`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from skillweave.errors import UsageError

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_NUMBER = re.compile(r"^\s*\d+[.)]\s*")
_SNAKE = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class QueryType:
    """One query type: a name, a one-line definition and a few example queries."""

    name: str
    definition: str = ""
    examples: tuple[str, ...] = field(default_factory=tuple)

    @property
    def query_type(self) -> str:
        """The string the generator prompt sees: 'Name: definition'."""
        return f"{self.name}: {self.definition}" if self.definition else self.name

    def as_entry(self) -> dict:
        return {"name": self.name, "definition": self.definition, "example": "\n".join(self.examples),
                "extra": {"examples": list(self.examples)}}


def to_snake_case(name: str) -> str:
    """'Marketing and Promotion' -> 'marketing_and_promotion' (how SDA skills are spelled)."""
    return _SNAKE.sub("_", name.strip().lower()).strip("_")


def parse_skills_txt(text: str, *, unique: bool = False) -> list[str]:
    skills = [line.strip() for line in text.splitlines()]
    skills = [s.lstrip("-*").strip() for s in skills if s and not s.startswith("#")]
    skills = [s for s in skills if s]
    return list(dict.fromkeys(skills)) if unique else skills


def read_skills_txt(path: str | Path, *, unique: bool = False) -> list[str]:
    """Skills from a `skills.txt` file, in file order."""
    from skillweave.catalog.textfiles import MAX_LINE, read_text

    path = Path(path)
    skills = parse_skills_txt(read_text(path, "skills", max_line=MAX_LINE), unique=unique)
    if not skills:
        raise UsageError(f"skills file '{path}' has no skills (expected one name per line)")
    return skills


def write_skills_txt(path: str | Path, skills: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s.strip()}\n" for s in skills if s.strip()), encoding="utf-8")
    return path


def _clean(text: str) -> str:
    return text.strip().strip("*").strip().lstrip(":-–").strip()


def _parse_block(block: str) -> QueryType | None:
    lines = [line.rstrip() for line in block.strip().splitlines()]
    if not lines or not lines[0].strip():
        return None
    header = lines[0]
    bold = _BOLD.search(header)
    if bold:
        name = bold.group(1).strip().rstrip(":").strip()
        after = _clean(header[bold.end():])
    else:  # header without bold: '1. Name: definition'
        head = _NUMBER.sub("", header).strip()
        name, _, after = head.partition(":")
        name, after = name.strip().strip("*").strip(), after.strip()
    name = _NUMBER.sub("", name).strip()
    if not name:
        return None
    definition, examples, in_examples = after, [], False
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        bare = line.lstrip("-*•").strip()
        low = bare.lower()
        if low.startswith("definition"):
            definition = definition or _clean(bare[len("definition"):])
            in_examples = False
            continue
        if low.startswith("example"):
            in_examples = True
            rest = _clean(re.sub(r"^examples?", "", bare, flags=re.I))
            if rest:
                examples.append(rest.strip('"“”'))
            continue
        if in_examples:
            examples.append(bare.strip('"“”'))
        elif not definition:
            definition = _clean(bare)
        else:
            examples.append(bare.strip('"“”'))
    return QueryType(name=name, definition=definition, examples=tuple(e for e in examples if e))


def parse_queries_txt(text: str) -> list[QueryType]:
    blocks = text.split("###")[1:] if "###" in text else []
    return [q for q in (_parse_block(b) for b in blocks) if q is not None]


def read_queries_txt(path: str | Path) -> list[QueryType]:
    """Query types from a `queries.txt` file (blocks starting with `###`), in file order."""
    from skillweave.catalog.textfiles import read_text

    path = Path(path)
    queries = parse_queries_txt(read_text(path, "query types"))
    if not queries:
        raise UsageError(
            f"query types file '{path}' has no '### N. **Name**' blocks; see skillweave.catalog.instruct_formats"
        )
    names = [q.name for q in queries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UsageError(f"query types file '{path}' names {duplicated} more than once; keep one block each")
    return queries


def format_queries_txt(queries: list[QueryType]) -> str:
    parts = []
    for i, q in enumerate(queries, 1):
        lines = [f"### {i}. **{q.name}**", f"Definition: {q.definition}"]
        if q.examples:
            lines.append("Examples:")
            lines += [f'- "{e}"' for e in q.examples]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_queries_txt(path: str | Path, queries: list[QueryType]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_queries_txt(queries), encoding="utf-8")
    return path


def skill_entries(skills: list[str]) -> list[dict]:
    """Catalog rows for `Store.save_catalog(..., kind='skills')`."""
    return [{"name": s, "category": "instruction-following"} for s in skills]


def query_entries(queries: list[QueryType]) -> list[dict]:
    """Catalog rows for `Store.save_catalog(..., kind='query_types')`."""
    return [q.as_entry() for q in queries]


def queries_from_entries(entries: list[dict]) -> list[QueryType]:
    """Back from stored catalog rows (`Store.get_catalog(...)['entries']`)."""
    return [
        QueryType(name=e["name"], definition=e.get("definition") or "",
                  examples=tuple((e.get("extra") or {}).get("examples") or []))
        for e in entries
    ]


DATA_DIR = Path(__file__).parent / "data"


def bundled_instruct_skills() -> list[str]:
    """A small instruction-following skill list in our own wording (not the released GPT-4 list)."""
    return read_skills_txt(DATA_DIR / "instruct_skills.txt")


def bundled_query_types() -> list[QueryType]:
    """The 16 query-type names of the GPT-4 SDA release, with our own definitions and examples."""
    return read_queries_txt(DATA_DIR / "instruct_queries.txt")
