"""A new store file copied from a prepared empty store, instead of running the schema's `CREATE` statements.

Creating a store from `store/schema.sql` (`Store._create_from_snapshot`) runs about sixty statements in one
transaction, 3-4 CPU ms; a run into a new file pays it once. The empty store those statements make is the same
bytes every time, so it is made once (by `Store` itself, from the snapshot), kept in the cache folder
(`$SKILLWEAVE_CACHE`, else `$XDG_CACHE_HOME/skillweave` or `~/.cache/skillweave`) and copied for every new file.

- **Keyed by what it was made from.** The file name and its header carry a key: a hash of the snapshot's statements
  and migration names, SQLite's version and this module's FORMAT. A changed schema (a new migration) gives a new key,
  so an older template is never found; a file whose header names another key is not used.
- **Checked before use.** The header also holds the length and CRC-32 of the store's bytes; a cut-off or damaged
  file is not used and is made again. A template is only ever made when the snapshot is current.
- **Written atomically, placed atomically.** The template is written to a temporary file and renamed into the cache;
  a new store is written to a temporary file beside the target and hard-linked to its name, which fails if the name
  exists meanwhile (another process made the store first: it is then opened as an existing store). Nothing is ever
  written to the target's name but a whole file.
- **Its own creation time.** The template's `_migrations.applied_at` holds a placeholder of the same length as a
  time stamp, replaced in the copied bytes by the time the new file is made (the records keep their size, so the
  file stays valid); a template where the placeholder does not appear exactly once per migration is not used.

Anything that fails (no cache folder, a read-only one, a file system without hard links) leaves the target untouched
and `Store` creates the file from the snapshot as before. tests/test_store_template.py checks that a copied store
equals one made by the migrations (tables, indexes, pragmas, `user_version`) and that a damaged, stale or misnamed
template is not used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import zlib
from pathlib import Path

FORMAT = 1  # raise when the way a template is made or laid out changes
MAGIC = b"skillweave empty store\n"
PLACEHOLDER = "0000-00-00T00:00:00.000+00:00"  # as long as `store.now()`'s "2026-12-06T10:05:29.425+00:00"


def cache_dir() -> Path:
    """$SKILLWEAVE_CACHE, else $XDG_CACHE_HOME/skillweave or ~/.cache/skillweave (where the embedded model's
    weights are cached too)."""
    root = os.environ.get("SKILLWEAVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "skillweave")
    return Path(root)


def template_key(statements: list[str], migrations: list[str]) -> str:
    """What a template was made from: the snapshot's statements and migrations, SQLite's version, FORMAT."""
    text = "\n".join([str(FORMAT), sqlite3.sqlite_version, " ".join(migrations), *statements])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def template_path(key: str) -> Path:
    return cache_dir() / f"empty-store-{key}.sqlite-template"


def _header(key: str, data: bytes) -> bytes:
    return MAGIC + f"{key} {len(data)} {zlib.crc32(data):08x}\n".encode()


_READ: dict[Path, tuple[tuple, bytes]] = {}  # template file -> (its stat when checked, the store's bytes)


def read_template(key: str) -> bytes | None:
    """The empty store's bytes kept under `key`, or None when there is none or it is not whole and current. A file
    checked before in this process, and not changed since (same inode, size and modification time), is not read
    again."""
    path = template_path(key)
    try:
        st = path.stat()
        seen = _READ.get(path)
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen is not None and seen[0] == signature:
            return seen[1]
        blob = path.read_bytes()
    except OSError:
        return None
    if not blob.startswith(MAGIC):
        return None
    head, sep, data = blob[len(MAGIC):].partition(b"\n")
    if not sep or MAGIC + head + b"\n" != _header(key, data) or not data.startswith(b"SQLite format 3\x00"):
        return None  # another key, another length, another CRC: stale, cut off or damaged
    if len(blob) == st.st_size:  # not replaced between the stat and the read
        _READ[path] = (signature, data)
    return data


def make_template(key: str, build) -> bytes | None:
    """Make the template: `build(path)` creates an empty store at `path` (Store, from the snapshot) and stamps its
    `_migrations.applied_at` with PLACEHOLDER; its bytes are written to the cache atomically. None on failure."""
    folder = cache_dir()
    tmp = folder / f".empty-store-{key}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        build(str(tmp))
        for suffix in ("-wal", "-shm", "-journal"):  # a closed WAL store leaves none; a stray one is not kept
            if os.path.exists(f"{tmp}{suffix}"):
                return None
        data = tmp.read_bytes()
        tmp.write_bytes(_header(key, data) + data)
        os.replace(tmp, template_path(key))
        return data
    except (OSError, sqlite3.Error):
        return None
    finally:
        for path in (str(tmp), f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(OSError):
                os.remove(path)


@functools.lru_cache(maxsize=4)
def _placeholders(data: bytes) -> tuple[int, ...]:
    """Where PLACEHOLDER stands in a template's bytes (found once per template a process uses)."""
    placeholder, found, at = PLACEHOLDER.encode(), [], data.find(PLACEHOLDER.encode())
    while at != -1:
        found.append(at)
        at = data.find(placeholder, at + len(placeholder))
    return tuple(found)


def place(path: str, data: bytes, stamp: str, migrations: int) -> bool:
    """Write the empty store `data` to the new file `path`, its placeholder time stamps replaced by `stamp`; False
    (nothing at `path` touched) when the placeholder is not there once per migration, when `path` exists by then,
    or on any error."""
    offsets = _placeholders(data)
    if len(stamp) != len(PLACEHOLDER) or len(offsets) != migrations:
        return False
    data = bytearray(data)
    for offset in offsets:
        data[offset:offset + len(PLACEHOLDER)] = stamp.encode()
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.new"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # SQLite's own mode for a new file
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.link(tmp, path)  # atomic, and fails if the name exists: never over another process's new store
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
