"""Reading user input files (skills, topics, datasets, review decisions, imported CSVs) with one clear error.

Every reader here raises `UsageError` (one `Error:` line, exit 2) for a missing file, a folder, text that is not
UTF-8, a NUL byte, a line longer than `max_line` characters or a CSV field over the csv module's limit, instead
of a traceback or silently odd data.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from skillweave.errors import UsageError

MAX_LINE = 10_000  # characters in one topic / skill name line; a longer one is not a name
CSV_FIELD_LIMIT = 131_072  # Python's csv default (128 KiB); a larger field is reported, not raised


def read_text(path: str | Path, what: str = "input", *, max_line: int | None = None) -> str:
    """A UTF-8 text file's contents, checked."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} file '{path}' is a folder")
    if not path.is_file():
        raise UsageError(f"{what} file '{path}' does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise UsageError(f"{what} file '{path}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line "
                         f"{line}); convert it, e.g. `iconv -f latin1 -t utf-8`") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} file '{path}': {exc.strerror or exc}") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UsageError(f"{what} file '{path}' contains a NUL byte on line {line}; it is not a text file")
    if max_line is not None:
        for number, line in enumerate(text.splitlines(), 1):
            if len(line) > max_line:
                raise UsageError(f"{what} file '{path}' line {number} is {len(line):,} characters; at most "
                                 f"{max_line:,} a line")
    return text


def read_csv(path: str | Path, what: str = "CSV", *, field_limit: int = CSV_FIELD_LIMIT) -> list[dict]:
    """A UTF-8 CSV file as dicts (header row = keys), checked as `read_text` and for over-long fields."""
    text = read_text(path, what)
    before = csv.field_size_limit(field_limit)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return list(reader)
    except csv.Error as exc:
        raise UsageError(f"{what} file '{path}' line {reader.line_num}: {exc}") from None
    finally:
        csv.field_size_limit(before)
