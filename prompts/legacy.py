"""Released `b2:` versions of the packaged templates, and what each of them sends (its `b3:` version).

Runs stored before `b3:` versions keep the `b2:` scheme, a hash of the whole template file. Editing a part of a
packaged file that is never sent (its `description`, a `fake_replies` fixture) therefore changes its `b2:`
version, and a continuation of such a run would stop with "template changed" although the model is sent the
same text. `legacy_versions.json` (next to this module) lists, for every packaged template, each `b2:` version
its file has had in the repository's history with that file's `b3:` version. A run pinned to a listed `b2:`
version continues with today's file when today's `b3:` equals the listed one: the template then reports the
pinned `b2:` version, so call keys (and stored replies) still match. Any other difference stops the
continuation as before (agents/run_prompts.py).

Rebuild the table from a git checkout after a commit that changes a packaged template file:

    python -m skillweave.prompts.legacy --write      # rewrite prompts/legacy_versions.json
    python -m skillweave.prompts.legacy --check      # exit 1 when a version in the history is missing
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from skillweave.errors import TemplateError
from skillweave.prompts import PACKAGE_DIR, PromptTemplate, _parse, content_version

TABLE = PACKAGE_DIR / "legacy_versions.json"
ABOUT = ("Released b2 versions of the packaged templates (hash of the whole file) with the b3 version (hash of "
         "what is sent) of that same file, from the git history. A run pinned to one of these b2 versions continues "
         "with today's file when today's b3 equals the listed b3. Built by `python -m skillweave.prompts.legacy "
         "--write`; see docs/prompts.md.")


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict]]:
    try:
        data = json.loads(TABLE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data.get("versions", {})


def released_b3(name: str, b2: str) -> str | None:
    """The `b3:` version of the released file of template `name` whose `b2:` version is `b2`, or None."""
    entry = _table().get(name, {}).get(b2)
    return entry["b3"] if entry else None


def as_released(template: PromptTemplate, pinned: set[str] | None) -> PromptTemplate:
    """In the `b2:` scheme, a template whose file changed only where nothing is sent stands for the released
    version the run pinned: returned with that version. Otherwise the template as it is."""
    if template.scheme != "b2" or not pinned or template.version in pinned:
        return template
    sends = template.in_scheme("b3").version
    for b2 in sorted(pinned):
        if released_b3(template.name, b2) == sends:
            return dataclasses.replace(template, released_as=b2)
    return template


# ---- building the table from the git history ---------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


def _sends(name: str, text: str) -> str | None:
    """The `b3:` version of one historic file text (None when today's loader cannot read it)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return _parse(name, path).version
        except TemplateError:
            return None


def build(root: Path) -> dict[str, dict[str, dict]]:
    """{template name: {b2 version: {b3, commit}}} for every version of every packaged template file in the git
    history of `root` (the repository root), oldest commit first; `commit` is where that text first appeared."""
    prefix = _git(root, "rev-parse", "--show-prefix").strip()  # the package may sit below the repository root
    log = _git(root, "log", "--reverse", "--format=@%H", "--name-only", "--", "prompts/*/*.yaml")
    versions: dict[str, dict[str, dict]] = {}
    commit = ""
    for line in log.splitlines():
        if line.startswith("@"):
            commit = line[1:]
            continue
        if not line.strip():
            continue
        rel = line.strip()[len(prefix):] if line.strip().startswith(prefix) else line.strip()
        parts = Path(rel).parts
        if len(parts) != 3 or parts[0] != "prompts" or not rel.endswith(".yaml"):
            continue
        try:
            text = _git(root, "show", f"{commit}:{prefix}{rel}")
        except subprocess.CalledProcessError:  # deleted in this commit
            continue
        name = f"{parts[1]}/{Path(parts[2]).stem}"
        sends = _sends(name, text)
        if sends is not None:
            versions.setdefault(name, {}).setdefault(content_version(text), {"b3": sends, "commit": commit[:12]})
    return {name: versions[name] for name in sorted(versions)}


def render(versions: dict) -> str:
    return json.dumps({"about": ABOUT, "versions": versions}, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skillweave.prompts.legacy",
                                     description="Build or check prompts/legacy_versions.json from the git history.")
    parser.add_argument("--root", default=str(PACKAGE_DIR.parent), help="the git checkout whose history is read (default: this package's)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the table")
    action.add_argument("--check", action="store_true", help="exit 1 when the history has a version the table lacks")
    args = parser.parse_args(argv)
    try:
        built = build(Path(args.root))
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()[0]
        print(f"Error: cannot read the git history of {args.root}: {reason}", file=sys.stderr)
        return 2
    if args.write:
        TABLE.write_text(render(built), encoding="utf-8")
        print(f"{TABLE}: {sum(len(v) for v in built.values())} versions of {len(built)} templates")
        return 0
    have = _table()
    missing = [f"{name} {b2}" for name, entries in built.items() for b2 in entries if b2 not in have.get(name, {})]
    for line in missing:
        print(f"missing: {line}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
