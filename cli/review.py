"""`skillweave review ...`: human review plugged in mid-loop (threads paused at a LangGraph interrupt)."""

from __future__ import annotations

import click


@click.group("review")
def review_group() -> None:
    """Review items that a run paused for a person: list, show, approve, edit, reject, or serve a web page."""


def register(root: click.Group) -> None:
    root.add_command(review_group)
