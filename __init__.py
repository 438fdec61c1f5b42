"""skillweave: an LLM data factory for skill-composition research."""

from skillweave._version import __version__

__all__ = ["__version__"]
