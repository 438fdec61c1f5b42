"""The docs stand on their own: nothing in the package cites the developers' external methods file, and every
link to a section of docs/methods.md names an anchor that page defines."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS_PAGE = ROOT / "docs" / "methods.md"
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".cfg", ".ini", ".html", ".js", ".css", ".json"}
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "build", "dist", "node_modules", ".pytest_cache", ".ruff_cache"}

# Built from pieces so that this file does not match itself.
_NAME = "METH" + "ODS"
# A citation: the name followed by `.md`, `§`, an apostrophe, `: ` or a word ("the ... criterion", "... C4").
# In code the bare name is also a constant (agents/dedup.py, agents/solver.py), so only those forms count
# there; in docs, templates and other text files any use of the name as a word counts.
EXTERNAL_CITATION = re.compile(r"\b" + _NAME + r"(?:\.md|\s*§|'|:\s|\s+[A-Za-z])")
ANY_USE = re.compile(r"\b" + _NAME + r"\b")

# Files that still cite the external file, by path from the repository root: none. (Packaged templates may
# change their description: a run pinned to a released `b2:` version continues when what the template sends is
# unchanged, prompts/legacy_versions.json and docs/prompts.md.)
ALLOWED: set[str] = set()

# `docs/methods.md#<anchor>`, `methods.md#<anchor>`, `../../docs/methods.md#<anchor>`, and in methods.md itself
# `](#<anchor>)`.
LINK = re.compile(r"methods\.md#([A-Za-z0-9_-]+)")
SELF_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')


def _package_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            files.append(path)
    return files


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def citations(files: list[Path]) -> dict[str, list[int]]:
    found = {}
    for path in files:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        pattern = EXTERNAL_CITATION if path.suffix == ".py" else ANY_USE
        hits = [n for n, line in enumerate(lines, 1) if pattern.search(line)]
        if hits:
            found[_rel(path)] = hits
    return found


def anchors() -> set[str]:
    return set(ANCHOR.findall(METHODS_PAGE.read_text(encoding="utf-8")))


def test_the_pattern_finds_citations_and_spares_the_constant_name():
    cite = _NAME + " \u00a71.4"
    assert EXTERNAL_CITATION.search(f"(see {cite})")
    assert EXTERNAL_CITATION.search(f"follow {_NAME}.md's table")
    assert EXTERNAL_CITATION.search(f"# design (default, {_NAME} C4): every refusal")
    assert EXTERNAL_CITATION.search(f"checks from {_NAME}: aggregation")
    assert EXTERNAL_CITATION.search(f"the {_NAME}' bound")
    assert not EXTERNAL_CITATION.search(f"{_NAME} = (\"minhash\", \"embedding\", \"none\")")
    assert not EXTERNAL_CITATION.search(f"    if self.method not in {_NAME}:")
    assert not EXTERNAL_CITATION.search(f"choose from {{', '.join({_NAME})}}")
    assert not EXTERNAL_CITATION.search("docs/methods.md#skillmix-judge")


def test_no_file_cites_the_external_methods_file():
    found = citations(_package_files())
    unexpected = {path: lines for path, lines in found.items() if path not in ALLOWED}
    assert not unexpected, f"cite docs/methods.md#<anchor> instead: {unexpected}"


def test_the_allow_list_names_only_existing_files():
    missing = sorted(path for path in ALLOWED if not (ROOT / path).is_file())
    assert not missing, f"take these out of ALLOWED: {missing}"


def test_every_methods_anchor_link_resolves():
    defined = anchors()
    assert {"skillmix", "skillmix-sampling", "topic-unlearning", "verification"} <= defined
    broken = []
    for path in _package_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            for anchor in LINK.findall(line) + (SELF_LINK.findall(line) if path == METHODS_PAGE else []):
                if anchor not in defined:
                    broken.append(f"{_rel(path)}:{n}: #{anchor}")
    assert not broken, "links to anchors docs/methods.md does not define:\n" + "\n".join(broken)


def test_anchors_are_unique():
    ids = ANCHOR.findall(METHODS_PAGE.read_text(encoding="utf-8"))
    assert len(ids) == len(set(ids))


RELATIVE_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_in_markdown_reach_existing_files():
    """Guides link to docs/results/ pages and to each other; a moved or renamed page must not leave a dead link."""
    broken = []
    for path in _package_files():
        if path.suffix != ".md":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for target in RELATIVE_LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue  # a URL or an anchor on the same page
                if not (path.parent / target.split("#")[0]).exists():
                    broken.append(f"{_rel(path)}:{n}: {target}")
    assert not broken, "dead relative links:\n" + "\n".join(broken)
