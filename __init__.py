"""skillweave: an LLM data factory for skill-composition research.

The Python API (docs/python-api.md): `skillweave.run(...)`, `await skillweave.arun(...)`,
`skillweave.resume(...)`, `await skillweave.aresume(...)`; each returns a `RunHandle`. They are imported on
first use, so `import skillweave` stays light.
"""

import importlib.abc
import sys

from skillweave._version import __version__

# Folders of the source tree that are not part of the package (setup.py leaves them out of the wheel). In an
# editable install the repository root is the package folder, so Python would import them as namespace
# packages; this finder makes `import skillweave.tests` fail there exactly as it does from the wheel.
NOT_SHIPPED = frozenset({"tests", "benchmarks", "docs", "build", "dist"})


class _SourceTreeOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        head, _, rest = name.partition(".")
        if head == "skillweave" and rest.split(".")[0] in NOT_SHIPPED:
            raise ModuleNotFoundError(f"No module named {name!r} ({rest.split('.')[0]}/ is not shipped)", name=name)
        return None


if not any(isinstance(f, _SourceTreeOnly) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceTreeOnly())

__all__ = ["__version__", "arun", "aresume", "resume", "run"]


def run(pipeline, **kwargs):
    """Start a run and wait for it (also inside a notebook); see `skillweave.api.run`."""
    from skillweave.api import run as _run

    return _run(pipeline, **kwargs)


async def arun(pipeline, **kwargs):
    """Start a run and await it on the running event loop; see `skillweave.api.arun`."""
    from skillweave.api import arun as _arun

    return await _arun(pipeline, **kwargs)


def resume(run_id, **kwargs):
    """Finish an interrupted run; see `skillweave.api.resume`."""
    from skillweave.api import resume as _resume

    return _resume(run_id, **kwargs)


async def aresume(run_id, **kwargs):
    """Finish an interrupted run on the running event loop; see `skillweave.api.aresume`."""
    from skillweave.api import aresume as _aresume

    return await _aresume(run_id, **kwargs)
