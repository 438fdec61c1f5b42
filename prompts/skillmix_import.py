"""Convert the official Skill-Mix prompt files (LeoYu/skill-mix `prompts/generation/<v>.json`, a JSON list of
Python format strings, one per student turn, and `prompts/grade/<v>.json`, one grading turn) into skillweave
templates (`skillmix/student.yaml`, `skillmix/judge.yaml`) for a `--prompts-dir` folder.

Each format field becomes the Jinja expression that renders the same string from the variables the Skill-Mix
pipeline passes (`skills` rows, `topic`, `k`, `sentence_limit`, and `text` for the judge):

| field | rendered as (upstream meaning) |
|---|---|
| `topic`, `num_skills`, `student_answer` | the topic, k, the graded text |
| `skills_str` | skill names joined by ', ' |
| `skills_defs_and_examples_simple` | one line per skill: `**name**: definition For example, example` |
| `skills_defs_and_examples` | `Skill: name`, `Definition: ...`, `Example: ...` lines per skill |
| `skills_defs` | one line per skill: `**name**: definition` |
| `num_skills_str`, `num_sentences`, `num_sentences_str` | k in words, max(1, k-1), e.g. 'two sentences' |
| `rubric_items` | 'Correctly illustrates <skill, lower case>' per skill (grading prompts 8 and 9: 'Illustrates'; 13, 14, llama: 'Contains'), then 'Pertains to <topic>', 'Text makes sense', 'At most <n sentences>'; empty for prompt versions without a rubric, as upstream |

The judge template also records `reply_format`: `table` for the grading versions upstream reads with its table
parser (those with a rubric, except 14 and llama), else `points_earned` (the number after each 'earned:', as
upstream reads the others); `run skillmix` parses the judge's replies accordingly.

Literal text is kept byte for byte (inside `{% raw %}` where it holds braces); `{{`/`}}` escapes become single
braces, as Python's str.format renders them.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import yaml

from skillweave.errors import UsageError

_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_WITH_RUBRIC = {"5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "gpt", "llama"}


def reply_format(version: str) -> str:
    """How upstream reads a grading prompt's replies: a rubric table for the prompt versions with a rubric
    (except 14 and llama), else the number after each 'earned:' (one 'Point earned: x' line per item)."""
    return "table" if version in _WITH_RUBRIC and version not in ("14", "llama") else "points_earned"


def _rubric_start(version: str) -> str:
    if version in ("8", "9"):
        return "Illustrates"
    if version in ("13", "14", "llama"):
        return "Contains"
    return "Correctly illustrates"


def _per_skill(body: str) -> str:
    """`body` once per skill, lines joined by a newline (no trailing one)."""
    return "{% for s in skills %}" + body + "{% if not loop.last %}\n{% endif %}{% endfor %}"


def field_expression(name: str, version: str) -> str:
    """The Jinja text that renders one official format field."""
    words = "{{ " + json.dumps(_NUMBER_WORDS) + "[k] }}"
    limit = "{{ [1, k - 1] | max }}"
    fields = {
        "topic": "{{ topic }}",
        "num_skills": "{{ k }}",
        "student_answer": "{{ text }}",
        "skills_str": "{{ skills | map(attribute='name') | join(', ') }}",
        "skills_defs_and_examples_simple": _per_skill("**{{ s.name }}**: {{ s.definition }} For example, {{ s.example }}"),
        "skills_defs_and_examples": _per_skill(
            "Skill: {{ s.name }}\nDefinition: {{ s.definition }}\nExample: {{ s.example }}"),
        "skills_defs": _per_skill("**{{ s.name }}**: {{ s.definition }}"),
        "num_skills_str": words,
        "num_sentences": limit,
        "num_sentences_str": "{{ sentence_limit }}",
        "rubric_items": ("{% for s in skills %}" + _rubric_start(version) + " {{ s.name | lower }}, {% endfor %}"
                         "Pertains to {{ topic }}, Text makes sense, At most {{ sentence_limit }}")
        if version in _WITH_RUBRIC else "",
    }
    if name not in fields:
        raise UsageError(f"official prompt field '{{{name}}}' is not one skillweave can fill "
                         f"(known: {', '.join(sorted(fields))})")
    return fields[name]


def to_jinja(fmt: str, version: str) -> str:
    """An official str.format template as a Jinja template that renders the same text."""
    out = []
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise UsageError(f"official prompt is not a valid format string: {exc}") from None
    for literal, field, spec, conversion in parsed:
        if literal:
            out.append("{% raw %}" + literal + "{% endraw %}" if any(c in literal for c in "{}%#") else literal)
        if field is not None:
            if spec or conversion:
                raise UsageError(f"official prompt field '{{{field}}}' uses a format spec, which is not supported")
            out.append(field_expression(field, version))
    return "".join(out)


def _load_list(path: Path) -> list[str]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"'{path}' is not a readable JSON file: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"'{path}' must hold a JSON list of prompt strings")
    return value


def _prompt_root(folder: Path) -> Path:
    for candidate in (folder / "prompts", folder):
        if (candidate / "generation").is_dir() and (candidate / "grade").is_dir():
            return candidate
    raise UsageError(f"'{folder}' holds no prompts/generation and prompts/grade folders (a LeoYu/skill-mix checkout)")


def import_skillmix_prompts(folder: str | Path, out: str | Path, *, generation: str = "default",
                            grading: str = "gpt", force: bool = False) -> list[Path]:
    """Write OUT/skillmix/student.yaml and OUT/skillmix/judge.yaml from the official prompt files."""
    root = _prompt_root(Path(folder).expanduser())
    gen_path, grade_path = root / "generation" / f"{generation}.json", root / "grade" / f"{grading}.json"
    for path in (gen_path, grade_path):
        if not path.is_file():
            raise UsageError(f"'{path}' not found")
    turns = _load_list(gen_path)
    grade = _load_list(grade_path)
    if len(turns) != 2:
        raise UsageError(f"'{gen_path}' has {len(turns)} turns; the Skill-Mix pipeline asks two (answer, revision)")
    if len(grade) != 1:
        raise UsageError(f"'{grade_path}' has {len(grade)} prompts; the grader is asked one")
    target = Path(out).expanduser() / "skillmix"
    files = {target / "student.yaml": _template(
                 f"Official Skill-Mix generation prompt '{generation}' ({_describe(gen_path)}), converted by "
                 "`skillweave prompts import-skillmix`.", ["skills", "topic", "k", "sentence_limit", "shorten"],
                 "turns", [to_jinja(t, generation) for t in turns]),
             target / "judge.yaml": _template(
                 f"Official Skill-Mix grading prompt '{grading}' ({_describe(grade_path)}), converted by "
                 "`skillweave prompts import-skillmix`; the grader answers with "
                 + ("a rubric table." if reply_format(grading) == "table" else "one 'Point earned: x' line per item."),
                 ["skills", "topic", "k", "sentence_limit", "text"], "prompt", to_jinja(grade[0], grading),
                 reply_format=reply_format(grading))}
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)


def _describe(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.parent.name}/{path.name}, sha256 {digest}"


def _template(description: str, variables: list[str], key: str, body, **extra) -> str:
    data = {"description": description, "variables": variables, key: body, **extra}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100000, default_style=None)
