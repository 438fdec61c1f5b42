"""Read and write the Instruct-SkillMix stage-1 files: `skills.txt` and `queries.txt`.

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
  line that is not an example. `query_type` = name + ": " + definition (the reference parser joins the name
  with the whole third `*`-separated piece instead, labels and examples included: the names agree, the
  definitions do not; tests/test_instruct_export_release_keys.py pins both).
  Lines after an `Examples:` line (or lines starting with `Example`) are examples.

Both readers raise UsageError naming the file and what is wrong; the writers produce files the readers read
back identically (and from which the upstream parser reads the same names). `*_entries` helpers convert to catalog rows for `Store.save_catalog`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
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
    raw: str = field(default="", compare=False)  # the block's text as read (for a byte-identical export)

    @property
    def query_type(self) -> str:
        """The string the generator prompt sees: 'Name: definition'."""
        return f"{self.name}: {self.definition}" if self.definition else self.name

    def as_entry(self) -> dict:
        extra: dict = {"examples": list(self.examples)}
        if self.raw:
            extra["raw"] = self.raw
        return {"name": self.name, "definition": self.definition, "example": "\n".join(self.examples),
                "extra": extra}


def to_snake_case(name: str) -> str:
    """'Marketing and Promotion' -> 'marketing_and_promotion' (how SDA skills are spelled)."""
    return _SNAKE.sub("_", name.strip().lower()).strip("_")


def _skill_name(line: str) -> str:
    line = line.strip()
    return "" if not line or line.startswith("#") else line.lstrip("-*").strip()


def skills_txt_segments(text: str) -> tuple[list[tuple[str, str]], str]:
    """(skill, the text from the end of the previous skill's line through the end of its own line) per skill,
    and the text after the last skill: joined back they are the file, byte for byte."""
    segments, pending = [], ""
    for line in text.splitlines(keepends=True):
        name = _skill_name(line)
        if name:
            segments.append((name, pending + line))
            pending = ""
        else:
            pending += line
    return segments, pending


def read_text_exact(path: str | Path) -> str:
    """The file's text with its line endings as written (no newline translation), checked as user input."""
    from skillweave.catalog.textfiles import read_text

    return read_text(path)


def parse_skills_txt(text: str, *, unique: bool = False) -> list[str]:
    skills = [name for name, _ in skills_txt_segments(text)[0]]
    return list(dict.fromkeys(skills)) if unique else skills


def read_skills_txt(path: str | Path, *, unique: bool = False) -> list[str]:
    """Skills from a `skills.txt` file, in file order."""
    from skillweave.catalog.textfiles import MAX_LINE, read_text

    path = Path(path)
    skills = parse_skills_txt(read_text(path, "skills", max_line=MAX_LINE), unique=unique)
    if not skills:
        raise UsageError(f"skills file '{path}' has no skills (expected one name per line)")
    return skills


def format_skills_txt(skills: list[str]) -> str:
    """One skill a line, no newline after the last: the released reader (`split('\\n')`) then sees no empty skill."""
    return "\n".join(s.strip() for s in skills if s.strip())


def write_skills_txt(path: str | Path, skills: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_skills_txt(skills), encoding="utf-8", newline="")
    return path


def skills_txt_entries(text: str) -> list[dict]:
    """Catalog rows for a skills.txt file that remember its bytes (`extra.raw`, and `extra.tail` on the last row)."""
    segments, tail = skills_txt_segments(text)
    entries = [{"name": name, "category": "instruction-following", "extra": {"raw": raw}} for name, raw in segments]
    if entries and tail:
        entries[-1]["extra"]["tail"] = tail
    return entries


def skills_txt_from_entries(entries: list[dict]) -> str:
    """The file back: byte-identical to the one read when every row still carries its text, else one skill a line."""
    extras = [e.get("extra") or {} for e in entries]
    if entries and all("raw" in x and _skill_name(x["raw"].splitlines()[-1]) == e["name"]
                       for e, x in zip(entries, extras, strict=True)):
        return "".join(x["raw"] for x in extras) + extras[-1].get("tail", "")
    return format_skills_txt([e["name"] for e in entries])


def _clean(text: str) -> str:
    """Bold markers and a leading ':' / dash dropped: '**: ** text' and ':** text' both give 'text'."""
    return text.replace("**", "").strip().strip("*").strip().lstrip(":-–").strip()


def _bare(line: str) -> str:
    """A body line without its bullet and bold markers: '- **Definition:** x' -> 'Definition: x'."""
    return line.strip().lstrip("-*• \t").replace("**", "").strip()


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
        bare = _bare(line)
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
    """Blocks split on `###` (as the released parser splits); each query type keeps its block's text in `raw`
    (the text before the first block, and blocks that name nothing, ride along with a neighbour)."""
    if "###" not in text:
        return []
    head, *blocks = text.split("###")
    queries: list[QueryType] = []
    pending = head
    for block in blocks:
        q = _parse_block(block)
        if q is None:
            if queries:
                queries[-1] = replace(queries[-1], raw=queries[-1].raw + "###" + block)
            else:
                pending += "###" + block
            continue
        queries.append(replace(q, raw=pending + "###" + block))
        pending = ""
    return queries


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
    """The file back: byte-identical to the one read when every query type still carries its block's text
    (and it still names that query type), else our canonical layout."""
    if queries and all(q.raw and _parse_block(q.raw.split("###", 1)[1].split("###")[0]) is not None
                       and _parse_block(q.raw.split("###", 1)[1].split("###")[0]).name == q.name for q in queries):
        return "".join(q.raw for q in queries)
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
    path.write_text(format_queries_txt(queries), encoding="utf-8", newline="")
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
                  examples=tuple((e.get("extra") or {}).get("examples") or []),
                  raw=(e.get("extra") or {}).get("raw") or "")
        for e in entries
    ]


DATA_DIR = Path(__file__).parent / "data"


def bundled_instruct_skills() -> list[str]:
    """A small instruction-following skill list in our own wording (not the released GPT-4 list)."""
    return read_skills_txt(DATA_DIR / "instruct_skills.txt")


def bundled_query_types() -> list[QueryType]:
    """The 16 query-type names of the GPT-4 SDA release, with our own definitions and examples."""
    return read_queries_txt(DATA_DIR / "instruct_queries.txt")
