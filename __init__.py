"""skillweave: an LLM data factory for skill-composition research."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skillweave")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"
