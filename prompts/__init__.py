"""Prompt templates: one YAML file each under `prompts/<pipeline>/`, Jinja2 with strict undefined variables.

A template's version is a hash of what it sends (`b3:` + blake2b of its system text, its turns and its sorted
declared variables), recorded with every model call and item it produced; its description and `fake_replies`
are not part of it. Runs recorded before this scheme used `b2:` (a hash of the whole normalised file) and keep
it: `legacy_version` computes it and a run pinned to `b2:` versions gets templates in that scheme. A user
folder (`--prompts-dir` / $SKILLWEAVE_PROMPTS) overrides packaged templates by relative path without touching
the install.

File fields: `description`, `variables` (names the caller must supply), optional `system`, and either `prompt`
(one user turn) or `turns` (a list of user turns of one conversation), plus optional `fake_replies` (one Jinja
string per turn) that only the `fake` provider renders, as its scripted reply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.meta
import jinja2.sandbox
import yaml

from skillweave.errors import TemplateError

PACKAGE_DIR = Path(__file__).parent
# Sandboxed: a template from --prompts-dir cannot reach Python internals (`cycler.__init__.__globals__...`).
_ENV = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                           autoescape=False)


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip() + "\n"


def content_version(text: str) -> str:
    """The `b2:` version of a template file: a hash of its whole normalised text (the scheme before `b3:`)."""
    return "b2:" + hashlib.blake2b(normalise(text).encode(), digest_size=8).hexdigest()


@lru_cache(maxsize=512)
def _version_of(text: str) -> str:
    return content_version(text)


SCHEMES = ("b3", "b2")  # newest first


@lru_cache(maxsize=512)
def send_version(system: str | None, turns: tuple[str, ...], variables: tuple[str, ...]) -> str:
    """The `b3:` version: a hash of exactly what a template sends (system, turns) and the variables it takes."""
    parts = json.dumps({"system": system or "", "turns": list(turns), "variables": sorted(variables)},
                       ensure_ascii=False, sort_keys=True)
    return "b3:" + hashlib.blake2b(parts.encode(), digest_size=8).hexdigest()


def scheme_of(version: str) -> str:
    return version.partition(":")[0]


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    path: Path
    text: str
    description: str
    variables: tuple[str, ...]
    turns: tuple[str, ...]
    system: str | None = None
    fake_replies: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, hash=False, compare=False)
    scheme: str = "b3"  # which version scheme `version` reports (a run pinned to `b2:` versions keeps b2)
    # a released `b2:` version this file stands for: its text differs only where nothing is sent (prompts/legacy.py)
    released_as: str | None = None

    @property
    def version(self) -> str:
        if self.scheme == "b2":
            return self.released_as or _version_of(self.text)
        return send_version(self.system, self.turns, self.variables)

    @property
    def legacy_version(self) -> str:
        """The `b2:` whole-file version, which runs recorded before `b3:` were keyed by."""
        return _version_of(self.text)

    def in_scheme(self, scheme: str) -> PromptTemplate:
        if scheme not in SCHEMES:
            raise TemplateError(f"unknown prompt version scheme '{scheme}'; known: {', '.join(SCHEMES)}")
        return self if scheme == self.scheme else dataclasses.replace(self, scheme=scheme)

    @property
    def source(self) -> str:
        return "user" if not str(self.path).startswith(str(PACKAGE_DIR)) else "package"

    def check_variables(self, values: dict) -> None:
        missing = [v for v in self.variables if v not in values]
        unknown = [v for v in values if v not in self.variables]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise TemplateError(
                f"template '{self.name}' ({self.path}): {'; '.join(parts)}; it takes: {', '.join(self.variables)}"
            )

    def _render(self, source: str, values: dict, what: str) -> str:
        try:
            return _compiled(source).render(**values).strip()
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template '{self.name}' {what}: {exc}") from None

    def render_turn(self, index: int, values: dict) -> str:
        self.check_variables(values)
        if not 0 <= index < len(self.turns):
            raise TemplateError(f"template '{self.name}' has {len(self.turns)} turn(s), not {index + 1}")
        return self._render(self.turns[index], values, f"turn {index}")

    def render_system(self, values: dict) -> str | None:
        return self._render(self.system, values, "system") if self.system else None

    def render_fake_reply(self, index: int, values: dict) -> str | None:
        """Test scaffolding: the `fake` provider's scripted reply. Never rendered for a real model call."""
        if index >= len(self.fake_replies):
            return None
        return self._render(self.fake_replies[index], values, f"fake reply {index}")

    def render_all(self, values: dict) -> dict:
        """Every part rendered, for `skillweave prompts render`."""
        return {
            "name": self.name,
            "version": self.version,
            "system": self.render_system(values),
            "turns": [self.render_turn(i, values) for i in range(len(self.turns))],
        }


@lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    template = _ENV.from_string(source)
    # Jinja gives a template its globals as a ChainMap over the environment's, and copies them key by key through
    # it into every render's context (~5 µs a render); nothing changes `_ENV.globals`, so a plain dict of the same
    # names and values renders the same text for a fifth of that.
    template.globals = dict(template.globals)
    return template


def search_dirs(prompts_dir: str | os.PathLike | None = None) -> list[Path]:
    user = prompts_dir or os.environ.get("SKILLWEAVE_PROMPTS")
    dirs = [Path(user).expanduser()] if user else []
    if dirs and not dirs[0].is_dir():
        raise TemplateError(f"prompts folder '{user}' does not exist (from --prompts-dir or SKILLWEAVE_PROMPTS)")
    return [*dirs, PACKAGE_DIR]


def _parse(name: str, path: Path) -> PromptTemplate:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"template '{name}' ({path}) is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateError(f"template '{name}' ({path}) is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"template '{name}' ({path}) must be a YAML mapping")
    if ("prompt" in data) == ("turns" in data):
        raise TemplateError(f"template '{name}' ({path}) needs exactly one of 'prompt' or 'turns'")
    turns = (data["prompt"],) if "prompt" in data else data["turns"]
    turns = tuple(turns) if isinstance(turns, list) else turns
    if not isinstance(turns, tuple) or not turns or not all(isinstance(t, str) for t in turns):
        raise TemplateError(f"template '{name}' ({path}): 'prompt' must be a string and 'turns' a list of strings")
    variables = tuple(data.get("variables") or ())
    fake = data.get("fake_replies") or ([data["fake_reply"]] if "fake_reply" in data else [])
    sources = [*turns, data.get("system") or "", *fake]
    referenced: set[str] = set()
    for source in sources:
        try:
            referenced |= jinja2.meta.find_undeclared_variables(_ENV.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template '{name}' ({path}) line {exc.lineno}: {exc.message}") from None
    undeclared = sorted(referenced - set(variables))
    if undeclared:
        raise TemplateError(
            f"template '{name}' ({path}) uses undeclared variable(s) {', '.join(undeclared)}; list them under 'variables'"
        )
    return PromptTemplate(
        name=name, path=path, text=text, description=str(data.get("description", "")).strip(),
        variables=variables, turns=turns, system=data.get("system"), fake_replies=tuple(fake),
        meta={k: v for k, v in data.items() if k not in {"prompt", "turns", "system", "variables", "fake_replies"}},
    )


@lru_cache(maxsize=256)
def _load_cached(name: str, path: str, mtime_ns: int) -> PromptTemplate:
    return _parse(name, Path(path))


def load_template(name: str, prompts_dir: str | os.PathLike | None = None) -> PromptTemplate:
    """Load `<pipeline>/<template>` (e.g. 'skillmix/student'), preferring the user folder. Every model call asks,
    so the file is checked with one `os.stat` (its mtime picks the cached parse) rather than through pathlib."""
    for folder in search_dirs(prompts_dir):
        path = os.path.join(folder, f"{name}.yaml")
        try:
            found = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(found.st_mode):
            return _load_cached(name, path, found.st_mtime_ns)
    known = ", ".join(t.name for t in list_templates(prompts_dir)) or "none"
    raise TemplateError(f"unknown template '{name}'; known templates: {known}")


def list_templates(prompts_dir: str | os.PathLike | None = None) -> list[PromptTemplate]:
    """All templates, user overrides first shadowing packaged ones of the same name."""
    found: dict[str, Path] = {}
    for folder in reversed(search_dirs(prompts_dir)):  # package first, user overrides
        for path in sorted(folder.glob("*/*.yaml")):
            found[f"{path.parent.name}/{path.stem}"] = path
    return [_load_cached(name, str(path), path.stat().st_mtime_ns) for name, path in sorted(found.items())]
