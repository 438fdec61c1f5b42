"""skillweave: an LLM data factory for skill-composition research.

The Python API (docs/python-api.md): `skillweave.run(...)`, `await skillweave.arun(...)`,
`skillweave.resume(...)`, `await skillweave.aresume(...)`; each returns a `RunHandle`. They are imported on
first use, so `import skillweave` stays light.
"""

from skillweave._version import __version__

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
