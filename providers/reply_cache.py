"""An opt-in reply cache shared across runs, keyed by the request itself.

The key hashes the model spec and the recorded request (messages, temperature, max tokens, number of samples,
provider options) and nothing about the run, item or role, so any run that sends the same request again (a
re-run with a changed parser or metric, a second experiment over the same prompts) gets the stored reply
without calling the provider. Only successful replies are cached. The cache is a small SQLite file of its own
(`--reply-cache FILE` or `$SKILLWEAVE_REPLY_CACHE`), safe to share between processes.

Sampled replies (temperature > 0) are cached too: a cache hit returns the same samples again, which is the point
when re-scoring, and the reason the cache is opt-in.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from skillweave.errors import UsageError
from skillweave.store import jdump, jload, now, stable_id

_OPEN: dict[str, ReplyCache] = {}
_LOCK = threading.Lock()


class ReplyCache:
    def __init__(self, path: str):
        self.path = str(Path(path).expanduser())
        try:
            self.conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, request TEXT, response TEXT, "
                "input_tokens INTEGER, output_tokens INTEGER, created_at TEXT)")
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot open reply cache '{self.path}': {exc}") from None
        self.lock = threading.Lock()

    @staticmethod
    def key(model: str, request_json: str) -> str:
        return stable_id("reply-cache-v1", model, request_json, length=32)

    def get(self, model: str, request_json: str) -> dict | None:
        with self.lock:
            row = self.conn.execute("SELECT response, input_tokens, output_tokens FROM replies WHERE key = ?",
                                    [self.key(model, request_json)]).fetchone()
        if row is None:
            return None
        return {"texts": jload(row[0]), "input_tokens": row[1], "output_tokens": row[2]}

    def put(self, model: str, request_json: str, texts: list[str], input_tokens, output_tokens) -> None:
        with self.lock:
            self.conn.execute("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [self.key(model, request_json), model, request_json, jdump(texts), input_tokens,
                               output_tokens, now()])

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM replies").fetchone()[0]


def open_cache(path: str | None) -> ReplyCache | None:
    """The process-wide cache object for a path (None when the run has no reply cache)."""
    if not path:
        return None
    key = str(Path(path).expanduser().resolve())
    with _LOCK:
        if key not in _OPEN:
            _OPEN[key] = ReplyCache(key)
        return _OPEN[key]


def cache_path(path: str | None) -> str | None:
    """A new run's reply cache: `path` (its --reply-cache), else `$SKILLWEAVE_REPLY_CACHE`, made absolute so a
    resume from another folder finds it, and opened once here so an unusable file fails before the run row."""
    path = path or os.environ.get("SKILLWEAVE_REPLY_CACHE")
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    open_cache(path)
    return path
