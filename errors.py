"""Typed errors raised by library code; the CLI turns each into one line on stderr."""

import click


class SkillweaveError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class UsageError(SkillweaveError):
    """Bad arguments or input files (exit status 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """An invalid option value or model spec."""


class TemplateError(UsageError):
    """A prompt template is missing, malformed, or rendered with wrong variables."""


class StoreError(SkillweaveError):
    """A record the user asked for is not in the store."""


class NotFound(StoreError):
    """A run, item, or other record id that does not exist."""

    exit_code = 2


class ModelCallError(SkillweaveError):
    """A model call that failed after its retries; recorded in llm_calls with its error."""

    def __init__(self, message: str, *, call_id: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.call_id = call_id
        self.retryable = retryable


class ParseFailure(SkillweaveError):
    """A model reply that did not contain the expected fields."""


class RunIncomplete(click.exceptions.Exit):
    """A run that ended with failed items (exit 3), paused for review or budget (exit 4) or interrupted (130).

    Not an error line: the run's summary is already printed; the CLI only sets the exit status.
    """

    def __init__(self, exit_code: int):
        super().__init__(exit_code)
