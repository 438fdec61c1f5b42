"""Packages are found, not listed: `skillweave` is the repository root (package-dir in pyproject.toml), and
every folder below it with an `__init__.py` is a subpackage, except the source-tree-only folders in
NOT_SHIPPED (tests, benchmarks, docs), which `skillweave/__init__.py` also keeps out of an editable install."""

from setuptools import find_packages, setup

NOT_SHIPPED = ["tests", "benchmarks", "docs", "build", "dist"]

setup(packages=["skillweave", *(f"skillweave.{p}" for p in find_packages(
    ".", exclude=[*NOT_SHIPPED, *(f"{n}.*" for n in NOT_SHIPPED)]))])
