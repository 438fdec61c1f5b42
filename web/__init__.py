"""The review web page: a small Starlette app over the store (server-rendered HTML, token required)."""

from skillweave.web.app import create_app

__all__ = ["create_app"]
