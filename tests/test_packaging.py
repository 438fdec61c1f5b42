"""The wheel and the editable install offer the same modules: every module of the source tree ships (packages
are found, not listed), and the source-tree-only folders (tests, benchmarks, docs) import from neither."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import skillweave

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ONLY = {"tests", "benchmarks", "docs"}
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.db", "*.db-*", "build", "dist", "*.egg-info",
                                "out", ".whl", "node_modules")


def source_modules() -> set[str]:
    out = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SOURCE_ONLY or any(p.startswith(".") or p in ("build", "dist", "__pycache__")
                                              for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        out.add(".".join(["skillweave", *parts]))
    return out


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    src = tmp_path_factory.mktemp("src") / "skillweave"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("skillweave-*.whl")
    return zipfile.ZipFile(wheel).namelist()


@pytest.fixture(scope="module")
def wheel_modules(wheel_files) -> set[str]:
    return {n[:-3].replace("/", ".") for n in wheel_files if n.startswith("skillweave/") and n.endswith(".py")}


@pytest.mark.slow  # builds the wheel (about 7 s on the 2-core machine)
def test_the_wheel_ships_every_module_of_the_source_tree_and_nothing_else(wheel_modules):
    assert wheel_modules == source_modules()
    assert "skillweave.pipelines.skillmix" in wheel_modules and "skillweave.api" in wheel_modules
    assert not {m for m in wheel_modules if m.split(".")[1] in SOURCE_ONLY}


@pytest.mark.parametrize("name", sorted(SOURCE_ONLY))
def test_source_tree_only_folders_do_not_import_from_the_editable_install(name):
    assert Path(skillweave.__file__).resolve().parent == ROOT  # this is the source tree (an editable install or PYTHONPATH)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"skillweave.{name}")
    with pytest.raises(ModuleNotFoundError):
        importlib.util.find_spec(f"skillweave.{name}.anything")


@pytest.mark.slow
def test_package_data_ships(wheel_files):
    """Prompt templates, catalog data, the review page's templates and the attention kernel's C source come with
    the wheel."""
    assert "skillweave/prompts/skillmix/student.yaml" in wheel_files
    assert "skillweave/prompts/legacy_versions.json" in wheel_files  # released b2 versions (docs/prompts.md)
    assert any(n.startswith("skillweave/catalog/data/") for n in wheel_files)
    assert any(n.startswith("skillweave/web/templates/") for n in wheel_files)
    assert "skillweave/providers/attention_kernel.c" in wheel_files  # the embedded model's kernel, built at first use
