"""The installed package version (kept in its own module so low layers can read it without importing the API)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skillweave")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"
