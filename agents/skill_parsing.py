"""Parsers for skill-extraction and solver replies: skill labels, one choice from a list, clustering JSON,
topic/skill outlines, and skill deduplication. Each raises ParseFailure instead of guessing."""

from __future__ import annotations

import json
import re

from skillweave.catalog.instruct_formats import to_snake_case
from skillweave.errors import ParseFailure

SNAKE = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
_SNAKE = SNAKE


def parse_skill_label(text: str) -> str:
    """`Skill: some_skill` (or a reply that is just one identifier) -> a snake_case label."""
    match = re.search(r"skill\s*[:：][\s`*\"']*([A-Za-z][\w \-]{0,79})", text, re.I)
    # small models answer in prose: 'The skill ... is "fraction_simplification".'
    match = match or re.search(
        r"skill\b[^\n]{0,80}?\bis\s*:?\s*[\"'`*“]+([A-Za-z][\w \-]{0,79})[\"'`*”]", text, re.I
    )
    raw = match.group(1) if match else text.strip().splitlines()[0] if text.strip() else ""
    if not match and len(raw.split()) > 1:
        raise ParseFailure(f"no 'Skill:' line in reply {text.strip()[:120]!r}")
    if "_" in raw.split()[0] if raw.split() else False:  # "gcd_lcm because ..." -> the identifier only
        raw = raw.split()[0]
    if len(raw.split()) > 6:
        raise ParseFailure(f"'{raw.strip()[:80]}' is a sentence, not a skill name")
    label = to_snake_case(raw)
    if not _SNAKE.match(label):
        raise ParseFailure(f"'{raw.strip()[:80]}' is not a snake_case skill name")
    return label


def parse_choice(text: str, names: list[str]) -> str:
    """The one name from `names` a reply picks: the `Skill:` value if it is a name, else the only name quoted."""
    by_snake = {to_snake_case(n): n for n in names}
    match = re.search(r"skill\s*[:：][\s`*\"']*([A-Za-z][\w \-]{0,79})", text, re.I)
    if match:
        candidate = to_snake_case(match.group(1))
        if candidate in by_snake:
            return by_snake[candidate]
        for length in range(len(candidate.split("_")), 0, -1):  # "Skill: gcd_lcm because ..." -> gcd_lcm
            prefix = "_".join(candidate.split("_")[:length])
            if prefix in by_snake:
                return by_snake[prefix]
    found = {n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", text)}
    found = {n for n in found if not any(n != m and n in m for m in found)}  # prefer the longest names
    if len(found) == 1:
        return found.pop()
    raise ParseFailure(
        f"reply names {'no' if not found else 'several'} listed skill(s): {text.strip()[:120]!r}"
    )


def clusters_schema():
    """The typed clustering reply: `{"skills": [{"name", "definition", "members": [fine label, ...]}]}`. Names,
    membership and coverage are `parse_clusters`' checks (a schema cannot list the labels)."""
    from pydantic import BaseModel, Field

    class SkillGroup(BaseModel):
        name: str = Field(min_length=1, description="snake_case name of the coarse skill")
        definition: str = ""
        members: list[str] = Field(min_length=1, description="fine labels, spelled as given")

    class SkillClusters(BaseModel):
        skills: list[SkillGroup] = Field(min_length=1)

    return SkillClusters


def parse_clusters(text: str, labels: list[str]) -> tuple[list[dict], list[str]]:
    """JSON groups -> ([{name, definition, members}], labels left out). Unknown members are ignored."""
    body = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.M).strip()
    start = min([i for i in (body.find("{"), body.find("[")) if i >= 0], default=-1)
    if start < 0:
        raise ParseFailure(f"no JSON in clustering reply {text.strip()[:120]!r}")
    try:
        data, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as exc:
        raise ParseFailure(f"clustering reply is not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and "skills" in data:
        data = data["skills"]
    groups: list[dict] = []
    if isinstance(data, list):
        for g in data:
            if isinstance(g, dict) and g.get("name") and isinstance(g.get("members"), list):
                groups.append(
                    {
                        "name": str(g["name"]),
                        "definition": str(g.get("definition") or ""),
                        "members": [str(m) for m in g["members"]],
                    }
                )
    elif isinstance(data, dict):  # {coarse: [fine, ...]} or {fine: coarse}
        if all(isinstance(v, list) for v in data.values()):
            groups = [{"name": k, "definition": "", "members": [str(m) for m in v]} for k, v in data.items()]
        elif all(isinstance(v, str) for v in data.values()):
            inverse: dict[str, list[str]] = {}
            for fine, coarse in data.items():
                inverse.setdefault(coarse, []).append(fine)
            groups = [{"name": k, "definition": "", "members": v} for k, v in inverse.items()]
    if not groups:
        raise ParseFailure("clustering reply has no groups of the form {name, definition, members}")
    known, seen, out = set(labels), set(), []
    for g in groups:
        name = to_snake_case(g["name"])
        if not _SNAKE.match(name):
            raise ParseFailure(f"coarse skill name '{g['name']}' is not snake_case")
        members = [m for m in dict.fromkeys(g["members"]) if m in known and m not in seen]
        seen.update(members)
        if members:
            out.append({"name": name, "definition": g["definition"].strip(), "members": members})
    return out, [label for label in labels if label not in seen]


def parse_skill_outline(text: str) -> list[tuple[str, str]]:
    """`## topic` headers with `- skill` lines -> [(topic, snake_case skill)] in order."""
    topic, out = "", []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            topic = line.lstrip("#").strip().strip("*").strip()
        elif line[:1] in "-*•" or re.match(r"^\d+[.)]", line):
            name = to_snake_case(re.sub(r"^(?:[-*•]|\d+[.)])\s*", "", line).strip("`*").split(":")[0])
            if _SNAKE.match(name):
                out.append((topic, name))
    if not out:
        raise ParseFailure(f"no '- skill_name' lines in reply {text.strip()[:120]!r}")
    return out


def dedupe_skills(pairs: list[tuple[str, str]]) -> list[dict]:
    """First occurrence wins; `concise_summary` and `Concise Summary` are the same skill."""
    seen: dict[str, dict] = {}
    for topic, name in pairs:
        key = to_snake_case(name)
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {"name": key, "subject": topic, "definition": "", "count": 1}
    return list(seen.values())
