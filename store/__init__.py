"""The SQLite store: runs, catalogs, items, every model call, grades, reviews, events and lineage.

One file (default ./skillweave.db, or --db / $SKILLWEAVE_DB), opened through sqlite-utils in WAL mode with
a busy timeout; numbered migrations (`store/migrations/`, and the sets of `trainers/` and `providers/`) are applied on open. Keys are deterministic
hashes so re-runs and resumes never duplicate a record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import importlib
import json
import os
import pkgutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed

from skillweave.errors import NotFound, StoreError

DEFAULT_DB = "skillweave.db"


def default_db_path() -> str:
    return os.environ.get("SKILLWEAVE_DB") or DEFAULT_DB


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond ("2026-12-06T10:05:29.425+00:00"), as
    `datetime.now(UTC).isoformat(timespec="milliseconds")` writes it. A run asks several times per model call, so
    the date and time of day are formatted once per second and only the milliseconds per call."""
    global _second, _last
    millis = time.time_ns() // 1_000_000
    last = _last
    if last[0] == millis:  # a busy run asks several times within one millisecond
        return last[1]
    seconds, ms = divmod(millis, 1000)
    second = _second
    if second[0] != seconds:
        second = _second = (seconds, (_EPOCH + _dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S"))
    text = f"{second[1]}.{ms:03d}+00:00"
    _last = (millis, text)
    return text


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_second: tuple[int | None, str] = (None, "")  # (Unix second, its date and time of day) of the last now()
_last: tuple[int | None, str] = (None, "")  # (Unix millisecond, its text) of the last now()


def jdump(value: Any) -> str:
    return _ENCODE(value)


# `json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)` builds this same encoder on every call (any
# argument off its defaults does); a run encodes ~8 values per model call, so it is built once (the same text).
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode


def jload(text: str | None, default: Any = None) -> Any:
    return default if text in (None, "") else json.loads(text)


_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_V4_SET = (0x8000 << 48) | (4 << 76)


def _v4_hex(raw: bytes) -> str:
    """`uuid.UUID(bytes=raw, version=4).hex` (what `uuid.uuid4().hex` returns for `raw = os.urandom(16)`), without
    building a UUID object: the variant and version bits set in the integer, 32 hex digits."""
    return f"{int.from_bytes(raw, 'big') & _V4_CLEAR | _V4_SET:032x}"


def stable_id(*parts: Any, length: int = 20) -> str:
    """A deterministic key from its parts (run id, kind, combination index, round, ...)."""
    return hashlib.blake2b(jdump(list(parts)).encode(), digest_size=16).hexdigest()[:length]


class StoreOpenError(StoreError):
    """The store file cannot be opened or is not a skillweave store (exit status 2, the file left as it was)."""

    exit_code = 2


def _check_store_path(path: str) -> None:
    """Refuse, before SQLite touches anything, a store path that cannot be a store file."""
    p = Path(path).expanduser()
    parent = p.resolve().parent
    if not parent.is_dir():
        raise StoreOpenError(f"cannot open store '{path}': folder {parent} does not exist")
    if p.is_dir():
        raise StoreOpenError(f"cannot open store '{path}': it is a folder; --db names a file")
    if p.exists() and not os.access(p, os.R_OK | os.W_OK):
        raise StoreOpenError(f"cannot open store '{path}': the file is not readable and writable by you")
    if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise StoreOpenError(f"cannot create store '{path}': folder {parent} is read-only for you")
    if p.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise StoreOpenError(f"cannot open store '{path}': folder {parent} is read-only for you (SQLite writes "
                             "its -wal and -shm files beside the store)")


def _open_in_this_process(p: Path) -> bool:
    """Whether this process has a file descriptor on the file `p` names (Linux's /proc/self/fd; True where that
    cannot be read). `os.stat` of a descriptor's link opens nothing."""
    try:
        target = p.stat()
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return True
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/self/fd/{fd}")
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return True
    return False


def _check_not_truncated(p: Path) -> None:
    """An SQLite file shorter than the page count its header records was cut off (a copy or download stopped).

    Called only after SQLite found the file unreadable, and only while this process has no descriptor on it:
    SQLite's locks are POSIX advisory locks, held per process and per file, and closing ANY descriptor on the
    file drops all of them. A plain open() and close() of the store while a connection of this process uses it
    lets another process take the file as unused, checkpoint and delete the -wal and -shm files under that
    connection, whose later writes then go to a deleted WAL and, checkpointed, overwrite newer pages: a corrupt
    store (docs/reliability.md)."""
    if not p.is_file() or _open_in_this_process(p):
        return
    with open(p, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return  # empty (a new store) or not SQLite: SQLite itself reports the latter
    wal = p.with_name(p.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        return  # pages may still live in the WAL
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the header's page count is valid only when these match
    if valid and pages and p.stat().st_size < pages * page_size:
        raise StoreOpenError(f"cannot open store '{p}': the file is truncated ({p.stat().st_size:,} of "
                             f"{pages * page_size:,} bytes); restore it from a copy")


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching values that start with `prefix` literally (use with `ESCAPE '\\'`)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def migration_modules() -> list[tuple[str, Any]]:
    """Every migration of every migration set, in one order by name.

    A migration set is a `migrations` package in a top-level folder of skillweave: `store/migrations` (the core
    tables), `trainers/migrations` and `providers/migrations` (the tables those packages own). Sets are found,
    not listed, and imported by name, so the store depends on no package above it. Names are unique across sets
    and keep the numbers they shipped with: a store made by an older release, when every migration lived in
    `store/migrations`, recognises each one it recorded.
    """
    found = _migration_sets()
    return [(name, importlib.import_module(f"skillweave.{found[name]}.migrations.{name}")) for name in sorted(found)]


@functools.cache
def _migration_sets() -> dict[str, str]:
    """Every migration's name -> the folder of its set (`migration_modules`), without importing the migrations."""
    root = Path(__file__).resolve().parents[1]
    found: dict[str, str] = {}
    for owner in sorted(p.parent.parent.name for p in root.glob("*/migrations/__init__.py")):
        for module in pkgutil.iter_modules([str(root / owner / "migrations")]):
            if not module.name.startswith("m"):
                continue
            if module.name in found:
                raise RuntimeError(f"migration {module.name} is in two sets: {found[module.name]} and {owner}")
            found[module.name] = owner
    return found


# The schema every migration leads to, for a new file (`Store._create_from_snapshot`): the `CREATE` statements of a
# store made by applying each migration in order, after a first line naming those migrations. A new store is made
# from it in one transaction instead of replaying them (about a tenth of the CPU); an existing store, or a snapshot
# that does not name exactly today's migrations, is migrated one migration at a time as before.
# tests/test_schema_snapshot.py checks that it is current; `write_schema_snapshot()` rewrites it.
SCHEMA_SNAPSHOT = Path(__file__).with_name("schema.sql")


def schema_statements(conn) -> list[str]:
    """The `CREATE` statements of a database's tables and indexes, in the order they were made (SQLite's own
    tables and the indexes it makes for constraints left out)."""
    return [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE "
                                           "'sqlite_%' ORDER BY rowid")]


def write_schema_snapshot(path: Path = SCHEMA_SNAPSHOT) -> None:
    """Rewrite store/schema.sql from a store made by applying every migration in order (after adding one)."""
    store = Store(":memory:", snapshot=False)
    try:
        names = [row["name"] for row in store.db["_migrations"].rows_where(order_by="name")]
        path.write_text(f"-- migrations: {' '.join(names)}\n" + "".join(f"{sql};\n" for sql in
                                                                          schema_statements(store.db.conn)))
    finally:
        store.close()


def _read_schema_snapshot() -> list[str] | None:
    """The snapshot's statements, or None when it is missing or does not name exactly today's migrations."""
    try:
        head, _, body = SCHEMA_SNAPSHOT.read_text().partition("\n")
    except OSError:
        return None
    if head.removeprefix("-- migrations: ").split() != sorted(_migration_sets()):
        return None
    return [sql for sql in body.split(";\n") if sql.strip()]


def _copy_template(path: str) -> bool:
    """A new file at `path` (nothing there, no -wal or -journal file left beside it) made as a copy of the prepared
    empty store for today's snapshot (store/template.py), the template made first if the cache has none; False
    when there is no current snapshot or anything fails (the caller then creates the file as before)."""
    if any(os.path.lexists(p) for p in (path, path + "-wal", path + "-journal")):
        return False
    from skillweave.store import template

    key = _template_key()
    if key is None:
        return False
    data = template.read_template(key)
    if data is None:
        data = template.make_template(key, _build_template)
    return data is not None and template.place(path, data, now(), len(_migration_sets()))


_KEYS: dict[tuple, str | None] = {}  # (snapshot file, its size and modification time) -> its template's key


def _template_key() -> str | None:
    """The key of the template for today's snapshot (store/template.py); None without a current snapshot. Worked out
    once per process while the snapshot file is unchanged."""
    from skillweave.store.template import template_key

    try:
        st = SCHEMA_SNAPSHOT.stat()
    except OSError:
        return None
    seen = (SCHEMA_SNAPSHOT, st.st_size, st.st_mtime_ns)
    if seen not in _KEYS:
        statements = _read_schema_snapshot()
        _KEYS[seen] = None if statements is None else template_key(statements, sorted(_migration_sets()))
    return _KEYS[seen]


def _build_template(path: str) -> None:
    """An empty store made from the snapshot at `path`, its migrations' `applied_at` set to the placeholder that
    `template.place` replaces with each new file's time; closed, so no -wal file is left."""
    from skillweave.store.template import PLACEHOLDER

    store = Store(path, template=False)
    try:
        with store.transaction():
            store.db.conn.execute("UPDATE _migrations SET applied_at = ?", [PLACEHOLDER])
    finally:
        store.close()


class Store:
    """A connection to one skillweave database, with the schema migrated to the newest version."""

    def __init__(self, path: str | os.PathLike | None = None, *, snapshot: bool = True, template: bool = True):
        """`snapshot`: a new file gets the schema from store/schema.sql in one step (False: every migration is
        applied in order, as for an existing store; `write_schema_snapshot` and tests). `template`: a new file is
        a copy of the prepared empty store that snapshot makes (store/template.py), where one can be had."""
        self._snapshot = snapshot
        self.path = str(path or default_db_path())
        self.from_template = False  # whether this file was just made as a copy of the prepared empty store
        if self.path != ":memory:":
            _check_store_path(self.path)
            if snapshot and template:
                self.from_template = _copy_template(self.path)
        # One connection per thread: Python's sqlite3 connection is not safe to use from two threads at once
        # (the web page resumes a thread in a worker while serving pages), and SQLite's WAL mode lets the
        # connections read while one writes. `lock` still serialises this process's writes.
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self.lock = _StoreLock(self)
        self._batch: list | None = None  # [loop, thread id, flush scheduled, connection] while batch_writes() is on
        self._own = None  # a store.own_items.OwnItems while own_items() is on
        self._shared = self._connect() if self.path == ":memory:" else None  # one in-memory database
        try:
            self.db  # noqa: B018  (open this thread's connection now, so a bad file fails here)
            self._migrate()
        except sqlite3.DatabaseError as exc:  # corrupt, read-only
            self.close()
            raise StoreOpenError(f"cannot open store '{self.path}': {exc}") from None

    def _check_is_store(self, conn: sqlite3.Connection) -> None:
        """Before anything is written (WAL mode, migrations): the file is an empty database or a store."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "_migrations" not in tables:
            conn.close()
            raise StoreOpenError(f"'{self.path}' is an SQLite database but not a skillweave store (no _migrations "
                                 f"table; it has {', '.join(sorted(tables)[:5])}); nothing was changed")

    def _create_from_snapshot(self) -> bool:
        """A new (empty) file: every table and index from SCHEMA_SNAPSHOT and every migration recorded as applied,
        in one transaction; False (nothing done) for a file that already has tables or without a current snapshot."""
        has_tables = "SELECT 1 FROM sqlite_master LIMIT 1"
        if self.db.conn.execute(has_tables).fetchone() is not None:  # a read: an open store takes no write lock
            return False
        statements = _read_schema_snapshot()
        if statements is None:
            return False
        with self.transaction():  # BEGIN IMMEDIATE: another process creating the same file waits, then sees tables
            conn = self.db.conn
            if conn.execute(has_tables).fetchone() is not None:
                return False
            for sql in statements:
                conn.execute(sql)
            applied = now()
            conn.executemany("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                             [(name, applied) for name in sorted(_migration_sets())])
        return True

    def _migrate(self) -> None:
        with self.lock:
            if self._snapshot and self._create_from_snapshot():
                return
            try:  # an existing store with every migration recorded: one read, nothing imported or written
                done = {name for (name,) in self.db.conn.execute("SELECT name FROM _migrations")}
            except sqlite3.OperationalError:  # no _migrations table yet
                done = set()
            if done.issuperset(_migration_sets()):
                return
            self.db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
            done = {row["name"] for row in self.db["_migrations"].rows}
            for name, module in migration_modules():
                if name in done:
                    continue
                with self.transaction():  # each migration is atomic
                    module.migrate(self.db)
                    self.db["_migrations"].insert({"name": name, "applied_at": now()})

    def _connect(self) -> sqlite_utils.Database:
        conn = None
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            if not self._connections:
                self._check_is_store(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if not self._connections and self.path != ":memory:":
                _check_not_truncated(Path(self.path).expanduser())  # names a cut-off file as such
            raise StoreOpenError(f"cannot open store '{self.path}': {exc}") from None
        with self.lock:
            self._connections.append(conn)
        return sqlite_utils.Database(conn)

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection to the store (opened on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._shared if self._shared is not None else self._connect()
        return db

    def close_thread_connection(self) -> None:
        """Close the calling thread's connection (for worker threads that end while the store stays open)."""
        db = getattr(self._local, "db", None)
        if db is None or db is self._shared:
            return
        self._local.db = None
        with self.lock:
            if db.conn in self._connections:
                self._connections.remove(db.conn)
        db.conn.close()

    def close(self) -> None:
        with self.lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # Hot paths use plain SQL: sqlite-utils introspects the schema on every insert, which costs more than
    # the write itself when a pipeline records thousands of calls.
    def _insert(self, table: str, row: dict, conflict: str = "") -> None:
        self._write(_insert_sql(table, conflict, tuple(row)), list(row.values()))

    def insert_rows(self, table: str, rows: list[tuple], columns: tuple[str, ...] | None = None) -> None:
        """Many rows at once, each a tuple in `columns` order (by default `ROW_COLUMNS[table]`), in one transaction:
        stores filled in bulk by tests and benchmarks, with no model call behind them."""
        with self.transaction():
            self.db.conn.executemany(_insert_sql(table, "", columns or ROW_COLUMNS[table]), rows)

    def _write(self, sql: str, args: list) -> sqlite3.Cursor:
        """One write statement: autocommitted, or, while `batch_writes` is on for this thread's event loop, part
        of the loop tick's transaction (committed when the tick ends, or earlier by the checkpointer's commit)."""
        batch = self._batch
        mine = batch is not None and batch[1] == threading.get_ident()
        # the batching thread itself (every hot-path write of a run) takes the re-entrant lock directly (C, no
        # Python frames): `Store.lock`'s own acquire commits the tick's batch, which it does only for other threads
        with self.lock._lock if mine else self.lock:
            conn = self.db.conn
            if mine and not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
                if not batch[2]:
                    batch[2] = True
                    batch[0].call_soon(self.flush_writes)
            return conn.execute(sql, args)

    def _write_now(self, sql: str, args: list) -> sqlite3.Cursor:
        """One write committed at once (a run's row, its catalog links): outside a `transaction()` block it commits
        with it whatever this connection has open (a tick's batch), and it never hands the commit to an event loop,
        which may be gone (the status `interrupted`, written after Ctrl-C stopped the run's loop)."""
        with self.lock:
            conn = self.db.conn
            cursor = conn.execute(sql, args)
            if conn.in_transaction and not getattr(self, "_depth", 0):
                conn.execute("COMMIT")
            return cursor

    def tick_write(self, sql: str, args: list) -> sqlite3.Cursor:
        """A write to a table the store does not own (the direct executor's end-of-thread LangGraph checkpoint)
        through the same path as the store's own: inside `batch_writes` it joins the tick's transaction."""
        return self._write(sql, args)

    @contextlib.contextmanager
    def batch_writes(self):
        """While on (in a coroutine on a running loop), hot-path writes of this thread share one transaction per
        event-loop tick instead of one commit each; committed at the tick's end and when this block exits. The
        checkpointer writes on the same connection and commits everything with it, so a checkpoint is never
        durable before the writes of the node it records."""
        import asyncio

        self._batch = [asyncio.get_running_loop(), threading.get_ident(), False, self.db.conn]
        try:
            yield self
        finally:
            self._batch = None
            self.flush_writes()

    @contextlib.contextmanager
    def own_items(self):
        """While on, the items this process creates are followed in memory, so that the per-request reads about
        them (stored call by key, latest event, the item's row) need no statement (store/own_items.py). The
        runtime turns it on around the threads it runs; released with `forget_own` when a thread ends."""
        from skillweave.store.own_items import OwnItems

        if self._own is not None:  # already on (an inner run): the outer one ends it
            yield self
            return
        info = list(self.db.conn.execute("PRAGMA table_info(items)"))
        # a column with a default would hold a value the INSERT did not name: rows are then not followed
        self._own = OwnItems({r[1]: r[2] for r in info}, follow_rows=all(r[4] is None for r in info))
        try:
            yield self
        finally:
            self._own = None

    def forget_own(self, item_id: str | None) -> None:
        """Stop following an item (its thread ended); its questions go to the store again."""
        if self._own is not None:
            self._own.drop(item_id)

    def own_item(self, item_id: str) -> dict:
        """`get_item` for a node of the thread that runs the item: served from memory when this process created
        the item and followed every write to it (the payload dict is a copy; its values must not be mutated)."""
        entry = self._own.get(item_id) if self._own is not None else None
        if entry is None or entry.row is None:
            return self.get_item(item_id)
        return {**entry.row, "payload": dict(entry.row["payload"])}

    def flush_writes(self) -> None:
        """Commit the tick's open write transaction, if any (never one a `transaction()` block holds)."""
        with self.lock:
            conn = self.db.conn
            if getattr(self, "_depth", 0):  # a transaction() block is open: its end is not ours to commit
                if self._batch is not None:
                    self._batch[0].call_soon(self.flush_writes)
                return
            if self._batch is not None:
                self._batch[2] = False
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _one(self, sql: str, args: list) -> dict | None:
        cursor = self.db.conn.execute(sql, args)
        row = cursor.fetchone()
        return dict(zip([d[0] for d in cursor.description], row, strict=True)) if row else None

    def _all(self, sql: str, args: list) -> list[dict]:
        cursor = self.db.conn.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def transaction(self):
        """Context manager for an atomic group of writes (no half-written records)."""
        return _Transaction(self)

    # ---- runs -------------------------------------------------------------------------------------
    def create_run(self, pipeline: str, config: dict, command: str = "", run_id: str | None = None) -> str:
        from skillweave._version import __version__

        run_id = run_id or f"{pipeline.replace('_', '-')}-{_dt.datetime.now(_dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        stamp = now()
        row = {"id": run_id, "pipeline": pipeline, "config": jdump(config), "version": __version__, "status": "running",
               "command": jsonify_if_needed(command), "error": None, "created_at": stamp, "updated_at": stamp,
               "finished_at": None}
        self._write_now(_insert_sql("runs", "", tuple(row)), list(row.values()))
        return run_id

    def set_run_status(self, run_id: str, status: str, error: str | None = None) -> None:
        values = {"status": status, "updated_at": now(), "error": jsonify_if_needed(error)}
        if status in ("done", "failed"):
            values["finished_at"] = values["updated_at"]
        self._update_run(run_id, values)

    def set_run_config(self, run_id: str, config: dict) -> None:
        """Replace a run's stored settings (options a continuation keeps: --retry-*, --max-cost, --batch)."""
        self._update_run(run_id, {"config": jdump(config)})

    def _update_run(self, run_id: str, values: dict) -> None:
        """One UPDATE of a run's row; a run that is not stored raises NotFound (nothing written)."""
        assignments = ", ".join(f"[{c}] = ?" for c in values)
        if self._write_now(f"UPDATE runs SET {assignments} WHERE id = ?", [*values.values(), run_id]).rowcount == 0:
            raise self._no_run(run_id)

    def get_run(self, run_id: str) -> dict:
        """A run by id; 'latest' names the newest run."""
        if run_id == "latest":
            row = self._one("SELECT * FROM runs ORDER BY created_at DESC LIMIT 1", [])
            if row is None:
                raise NotFound("the store has no runs yet; start one with `skillweave run skillmix`")
        else:
            row = self._one("SELECT * FROM runs WHERE id = ?", [run_id])
            if row is None:
                raise self._no_run(run_id)
        return {**row, "config": jload(row["config"], {})}

    def _no_run(self, run_id: str) -> NotFound:
        return NotFound(f"no run '{run_id}' in {self.path}; `skillweave runs list` shows the runs")

    def list_runs(self, limit: int = 50, pipeline: str | None = None) -> list[dict]:
        where, args = ("pipeline = ?", [pipeline]) if pipeline else (None, [])
        return list(self.db["runs"].rows_where(where, args, order_by="created_at desc", limit=limit))

    # ---- prompt versions --------------------------------------------------------------------------
    def put_prompt_version(self, version: str, name: str, text: str, source: str = "") -> str:
        self._insert("prompt_versions", {"id": version, "name": name, "text": text, "source": source,
                                         "created_at": now()}, "OR IGNORE")
        return version

    # ---- catalogs ---------------------------------------------------------------------------------
    def save_catalog(
        self, name: str, kind: str, entries: list[dict], *, source: str = "", meta: dict | None = None,
        exemplars: Iterable[dict] = (),
    ) -> str:
        """Store a catalog snapshot (content-addressed: the same entries give the same id)."""
        exemplars = list(exemplars)
        catalog_id = f"{kind}-" + stable_id(kind, entries, exemplars, length=16)
        if self._one(_CATALOG_STORED, [catalog_id]) is not None:  # stored before: one read, no write lock taken
            return catalog_id
        value = _field
        entry_rows = [(stable_id(catalog_id, i), catalog_id, i, value(e["name"]), value(e.get("category")),
                       value(e.get("definition")), value(e.get("example")), value(e.get("status")),
                       value(e.get("parent")), _json_field(e.get("extra"))) for i, e in enumerate(entries)]
        exemplar_rows = [(stable_id(catalog_id, "x", i), catalog_id, value(x["skill"]), value(x.get("question")),
                          value(x.get("answer")), _json_field(x.get("extra")), value(x.get("source_item_id")))
                         for i, x in enumerate(exemplars)]
        with self.transaction():
            conn = self.db.conn
            if conn.execute(_insert_sql("catalogs", "OR IGNORE", _CATALOG_COLUMNS),
                            [catalog_id, value(name), value(kind), value(source), _json_field(meta), now()]).rowcount:
                conn.executemany(_insert_sql("catalog_entries", "", _ENTRY_COLUMNS), entry_rows)
                conn.executemany(_insert_sql("exemplars", "", _EXEMPLAR_COLUMNS), exemplar_rows)
            # else another process stored the same catalog meanwhile: its rows are these rows
        return catalog_id

    def get_catalog(self, catalog_id: str) -> dict:
        row = self._one("SELECT * FROM catalogs WHERE id = ?", [catalog_id])
        if row is None:
            raise NotFound(f"no catalog '{catalog_id}' in {self.path}")
        entries = [{**e, "extra": _json_object(e["extra"])}
                   for e in self._all("SELECT * FROM catalog_entries WHERE catalog_id = ? ORDER BY position", [catalog_id])]
        exemplars = [{**x, "extra": _json_object(x["extra"])}
                     for x in self._all("SELECT * FROM exemplars WHERE catalog_id = ? ORDER BY rowid", [catalog_id])]
        return {**row, "meta": _json_object(row["meta"]), "entries": entries, "exemplars": exemplars}

    def link_run_catalog(self, run_id: str, catalog_id: str, role: str) -> None:
        self._write_now("INSERT OR IGNORE INTO run_catalogs (run_id, catalog_id, role) VALUES (?, ?, ?)",
                        [run_id, catalog_id, role])

    def run_catalogs(self, run_id: str) -> dict[str, str]:
        return {r["role"]: r["catalog_id"] for r in self._all("SELECT * FROM run_catalogs WHERE run_id = ?", [run_id])}

    # ---- items ------------------------------------------------------------------------------------
    @staticmethod
    def item_id(run_id: str, kind: str, combo_index: int, round: int = 0) -> str:
        return stable_id(run_id, kind, combo_index, round)

    def ensure_item(self, run_id: str, kind: str, combo_index: int, round: int = 0, **fields) -> str:
        """Create the item if absent (never twice) and return its id."""
        item_id = self.item_id(run_id, kind, combo_index, round)
        row = {
            "id": item_id, "run_id": run_id, "kind": kind, "combo_index": combo_index, "round": round,
            "status": "pending", "payload": "{}", "prompt_versions": "[]", "created_at": now(), "updated_at": now(),
        }
        for key, value in fields.items():
            row[key] = jdump(value) if key in ("skills", "payload", "prompt_versions") else value
        cursor = self._write(_insert_sql("items", "OR IGNORE", tuple(row)), list(row.values()))
        own = self._own
        if own is not None and cursor.rowcount == 1:  # this process made the row: follow it (store/own_items.py)
            full = dict.fromkeys(own.columns)
            full.update(row)
            follow = own.follow_rows and len(full) == len(own.columns) and all(own.plain(c, v) for c, v in full.items())
            own.add(item_id, _decode_item(full) if follow else None, cursor.lastrowid)
        return item_id

    def get_item(self, item_id: str) -> dict:
        row = self._one("SELECT * FROM items WHERE id = ?", [item_id])
        if row is None:
            raise NotFound(f"no item '{item_id}' in {self.path}")
        return _decode_item(row)

    def update_item(self, item_id: str, *, payload_update: dict | None = None, prompt_versions: Iterable[str] = (),
                    **fields) -> None:
        """Update columns; `payload_update` merges into the JSON payload; prompt versions accumulate."""
        prompt_versions = list(dict.fromkeys(prompt_versions))
        if len(prompt_versions) <= 1 and all(isinstance(k, str) and '"' not in k for k in payload_update or ()):
            # the hot path: one UPDATE, no read first and no explicit transaction: the payload's keys are set in
            # place by SQLite (json_set) and a prompt version is appended unless the list holds it already
            values = {k: jdump(v) if k == "skills" else v for k, v in fields.items()}
            values["updated_at"] = now()
            args = list(values.values())
            if prompt_versions:
                args += [prompt_versions[0], prompt_versions[0]]
            for k, v in (payload_update or {}).items():
                args += [f'$."{k}"', jdump(v)]
            own = self._own.get(item_id) if self._own is not None else None
            by_rowid = own is not None and own.seq is not None  # the row found without the primary key's index
            sql = _item_update_sql(tuple(values), bool(prompt_versions), len(payload_update or ()), by_rowid)
            try:
                cursor = self._write(sql, [*args, own.seq if by_rowid else item_id])
            except BaseException:
                self.forget_own(item_id)
                raise
            if cursor.rowcount == 0:
                raise NotFound(f"no item '{item_id}' in {self.path}")
            if own is not None and own.row is not None:
                own.row = _followed_update(self._own, own.row, values, prompt_versions, payload_update, args)
            return
        self.forget_own(item_id)  # the general path: the store answers for this item from now on
        with self.transaction():
            current = self._one("SELECT payload, prompt_versions FROM items WHERE id = ?", [item_id])
            if current is None:
                raise NotFound(f"no item '{item_id}' in {self.path}")
            values = dict(fields)
            if payload_update:
                values["payload"] = jdump({**jload(current["payload"], {}), **payload_update})
            if prompt_versions:
                merged = list(dict.fromkeys([*jload(current["prompt_versions"], []), *prompt_versions]))
                values["prompt_versions"] = jdump(merged)
            if "skills" in values:
                values["skills"] = jdump(values["skills"])
            values["updated_at"] = now()
            assignments = ", ".join(f"[{c}] = ?" for c in values)
            self.db.conn.execute(f"UPDATE items SET {assignments} WHERE id = ?", [*values.values(), item_id])

    def items(self, run_id: str | None = None, *, kind: str | None = None, status: str | None = None) -> Iterator[dict]:
        clauses, args = [], []
        for column, value in (("run_id", run_id), ("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = " and ".join(clauses) or None
        for row in self.db["items"].rows_where(where, args, order_by="combo_index, round, kind"):
            yield _decode_item(row)

    # ---- model calls ------------------------------------------------------------------------------
    def find_call(self, call_key: str, item_id: str | None) -> dict | None:
        """The successful call already stored for this key and item (None: a call of no item), if any (resume never
        calls twice). One lookup in the `(item_seq, call_key)` index (store/migrations/m0160_item_seq.py); a key
        that this process never recorded for an item it created is answered without a query (store/own_items.py)."""
        own = self._own.get(item_id) if self._own is not None else None
        if own is not None and call_key not in own.keys:
            return None
        return without_item_seq(self._one(_FIND_CALL, [item_id, call_key]))

    def record_call(self, **row) -> str:
        if "id" not in row:
            row["id"] = _v4_hex(os.urandom(16))
        row.setdefault("created_at", now())
        for key in ("request", "response"):
            if not isinstance(row.get(key), str | type(None)):
                row[key] = jdump(row[key])
        own = self._own.get(row.get("item_id")) if self._own is not None else None
        if own is not None and own.seq is not None:
            row["item_seq"] = own.seq
        self._insert("llm_calls", row)
        if own is not None and row.get("error") is None and row.get("call_key") is not None:
            own.keys.add(row["call_key"])
        return row["id"]

    # ---- grades, reviews, events ------------------------------------------------------------------
    def add_grade(self, item_id: str, run_id: str, sample_index: int, **row) -> str:
        return self.add_grades(item_id, run_id, [{"sample_index": sample_index, **row}])[0]

    def add_grades(self, item_id: str, run_id: str, samples: list[dict]) -> list[str]:
        """`add_grade` for several samples of one item (each dict: `sample_index` and `add_grade`'s fields), the same
        rows written by one statement when the samples name the same fields (a judge call's n samples)."""
        rows, created = [], now()  # one statement, one moment
        own = self._own.get(item_id) if self._own is not None else None
        seq = own.seq if own is not None else None
        for sample in samples:
            index = sample["sample_index"]
            row = {"id": stable_id(item_id, sample.get("judge"), index), "item_id": item_id, "run_id": run_id,
                   "sample_index": index, "created_at": created}
            row.update((k, v) for k, v in sample.items() if k != "sample_index")
            if seq is not None:
                row["item_seq"] = seq
            if not isinstance(row.get("points"), str | type(None)):
                row["points"] = jdump(row["points"])
            rows.append(row)
        columns = tuple(rows[0]) if rows else ()
        if len(rows) == 1 or any(tuple(row) != columns for row in rows) or len(rows) * len(columns) > 30_000:
            for row in rows:
                self._insert("grades", row, "OR REPLACE")
        elif rows:
            self._write(_insert_sql("grades", "OR REPLACE", columns, len(rows)),
                        [value for row in rows for value in row.values()])
        return [row["id"] for row in rows]

    def grades(self, item_id: str) -> list[dict]:
        return [{**g, "points": jload(g["points"], [])}
                for g in rows_of_item(self, "grades", item_id, "sample_index, rowid")]

    def add_review(self, item_id: str, run_id: str, reviewer: str, decision: str, reason: str = "",
                   changes: dict | None = None) -> str:
        review_id = uuid.uuid4().hex
        with self.lock:
            self.db["reviews"].insert(
                {"id": review_id, "item_id": item_id, "run_id": run_id, "reviewer": reviewer, "decision": decision,
                 "reason": reason, "changes": jdump(changes or {}), "created_at": now()}
            )
        return review_id

    def add_event(self, run_id: str, item_id: str | None, stage: str, status: str, reason: str = "") -> None:
        """Log an item's transition; the same transition as the item's latest event is not logged again (a node
        that re-runs on resume, after a kill between its event and its checkpoint, logs it once)."""
        if item_id is None:
            self._insert("events", {"run_id": run_id, "item_id": item_id, "stage": stage, "status": status,
                                    "reason": reason, "created_at": now()})
            return
        own = self._own.get(item_id) if self._own is not None else None
        if own is not None:  # this process logged every event of the item: its latest is known
            event = (run_id, stage, status, reason)
            if own.last_event != event:
                try:
                    row = {"run_id": run_id, "item_id": item_id, "stage": stage, "status": status, "reason": reason,
                           "created_at": now()}
                    if own.seq is not None:
                        row["item_seq"] = own.seq
                    self._insert("events", row)
                except BaseException:
                    self.forget_own(item_id)
                    raise
                own.last_event = event
            return
        # one statement: the row is inserted unless the item's latest event is this transition (`IS`: NULL-safe)
        self._write(_EVENT_UNLESS_REPEATED, [run_id, item_id, stage, status, reason, now()])

    # ---- lineage ----------------------------------------------------------------------------------
    def lineage(self, item_id: str) -> dict:
        """Everything that produced an item: run config, catalogs, prompt versions, model calls, grades, reviews."""
        item = self.get_item(item_id)
        calls = rows_of_item(self, "llm_calls", item_id, "created_at")
        versions = sorted({c["prompt_version"] for c in calls if c["prompt_version"]} | set(item["prompt_versions"]))
        prompts = [
            {k: p[k] for k in ("id", "name", "source")}
            for p in self.db["prompt_versions"].rows_where(
                f"id in ({', '.join('?' * len(versions))})" if versions else "0", versions
            )
        ]
        return {
            "item": item,
            "run": self.get_run(item["run_id"]),
            "catalogs": self.run_catalogs(item["run_id"]),
            "prompt_versions": prompts,
            "llm_calls": calls,
            "grades": self.grades(item_id),
            "reviews": list(self.db["reviews"].rows_where("item_id = ?", [item_id], order_by="created_at")),
            "events": rows_of_item(self, "events", item_id, "id"),
        }


_CATALOG_STORED = "SELECT 1 AS stored FROM catalogs WHERE id = ?"
_CATALOG_COLUMNS = ("id", "name", "kind", "source", "meta", "created_at")
_ENTRY_COLUMNS = ("id", "catalog_id", "position", "name", "category", "definition", "example", "status", "parent",
                  "extra")
_EXEMPLAR_COLUMNS = ("id", "catalog_id", "skill", "question", "answer", "extra", "source_item_id")


def _field(value: Any) -> Any:
    """A catalog field as sqlite-utils stored it (`jsonify_if_needed`: a list or dict as JSON, a date as ISO text)."""
    return value if value is None or type(value) is str else jsonify_if_needed(value)


def _json_field(value: Any) -> str:
    """`jdump(value or {})`, without the encoder for the usual empty value."""
    return jdump(value) if value else "{}"


def _json_object(text: str | None) -> Any:
    """A stored JSON field that defaults to {} (`jload(text, {})`), without the parser for the usual "{}"."""
    return {} if text == "{}" else jload(text, {})


# Statement texts are made once per shape (table, columns, options), not once per write.
ROW_COLUMNS = {  # the column order of `Store.insert_rows`' tuples per table
    "items": ("id", "run_id", "kind", "combo_index", "round", "k", "skills", "topic", "status", "payload",
              "prompt_versions", "created_at", "updated_at"),
    "grades": ("id", "item_id", "run_id", "judge", "sample_index", "points", "score", "parse_status", "created_at"),
    "reviews": ("id", "item_id", "run_id", "reviewer", "decision", "reason", "changes", "created_at"),
}


# Tables whose rows of an item are indexed by the item's rowid (store/migrations/m0160_item_seq.py): an INSERT that
# names `item_id` also sets `item_seq` from the same parameter (`?N`, numbered: the caller's arguments are unchanged).
ITEM_SEQ_TABLES = ("llm_calls", "grades", "events")
ITEM_SEQ = "(SELECT rowid FROM items WHERE id = {})"  # an item's rowid, NULL for no item or an item not stored


@functools.lru_cache(maxsize=1024)
def _insert_sql(table: str, conflict: str, columns: tuple[str, ...], rows: int = 1) -> str:
    names = ", ".join(f"[{c}]" for c in columns)
    if table in ITEM_SEQ_TABLES and "item_id" in columns and "item_seq" not in columns:
        at = columns.index("item_id") + 1
        values = ", ".join(f"({', '.join('?' * len(columns))}, {ITEM_SEQ.format(f'?{r * len(columns) + at}')})"
                           for r in range(rows))
        return f"INSERT {conflict} INTO [{table}] ({names}, [item_seq]) VALUES {values}"
    values = f"({', '.join('?' * len(columns))})"
    return f"INSERT {conflict} INTO [{table}] ({names}) VALUES {', '.join([values] * rows)}"


@functools.lru_cache(maxsize=1024)
def _item_update_sql(columns: tuple[str, ...], prompt_version: bool, payload_paths: int, by_rowid: bool = False) -> str:
    """`UPDATE items` of `columns`; with `prompt_version`, a version appended unless listed; with `payload_paths`,
    that many JSON paths set in the payload; the row named by its id, or by its rowid (`by_rowid`)."""
    assignments = [f"[{c}] = ?" for c in columns]
    if prompt_version:
        assignments.append(
            "prompt_versions = CASE WHEN EXISTS (SELECT 1 FROM json_each(coalesce(prompt_versions, '[]')) "
            "WHERE value = ?) THEN prompt_versions ELSE json_insert(coalesce(prompt_versions, '[]'), '$[#]', ?) END")
    if payload_paths:
        paths = ", ".join("?, json(?)" for _ in range(payload_paths))
        assignments.append(f"payload = json_set(coalesce(payload, '{{}}'), {paths})")
    return f"UPDATE items SET {', '.join(assignments)} WHERE {'rowid' if by_rowid else 'id'} = ?"


# an item's rows are found through its rowid (the indexes' first column) and checked by id
_OF_ITEM = "item_seq IS " + ITEM_SEQ.format("?1") + " AND item_id IS ?1"
_FIND_CALL = f"SELECT * FROM llm_calls WHERE {_OF_ITEM} AND call_key = ?2 AND error IS NULL LIMIT 1"

_EVENT_UNLESS_REPEATED = (
    "INSERT INTO events (run_id, item_id, stage, status, reason, created_at, item_seq) SELECT ?, ?, ?, ?, ?, ?, "
    + ITEM_SEQ.format("?2") + " WHERE NOT EXISTS (SELECT 1 FROM (SELECT run_id, stage, status, reason FROM events "
    "WHERE item_seq IS " + ITEM_SEQ.format("?2") + " AND item_id = ?2 "
    "ORDER BY id DESC LIMIT 1) AS last WHERE last.run_id IS ?1 AND last.stage IS ?3 AND last.status IS ?4 "
    "AND last.reason IS ?5)")


def without_item_seq(row: dict | None) -> dict | None:
    """A stored call, grade or event as users see it: `item_seq` (an index key of this file) left out."""
    if row is not None:
        row.pop("item_seq", None)
    return row


def rows_of_item(store: Store, table: str, item_id: str, order_by: str) -> list[dict]:
    """The rows of one item in `llm_calls`, `grades` or `events`, ordered, without `item_seq`."""
    return [without_item_seq(r) for r in store._all(
        f"SELECT * FROM [{table}] WHERE {_OF_ITEM} ORDER BY {order_by}", [item_id])]


def _followed_update(own, row: dict, values: dict, prompt_versions: list, payload_update: dict | None,
                     args: list) -> dict | None:
    """The followed row after `update_item`'s hot path wrote `values`, a prompt version and payload keys (json_set:
    a key keeps its place, a new one goes last, as in a Python dict); None (stop following) when a value's stored
    form could read back differently."""
    row = dict(row)
    for column, value in values.items():
        if column == "skills":
            value = jload(value, [])
        elif column in ("payload", "prompt_versions") or not own.plain(column, value):  # JSON text given as is
            return None
        row[column] = value
    if prompt_versions and prompt_versions[0] not in row["prompt_versions"]:
        row["prompt_versions"] = [*row["prompt_versions"], prompt_versions[0]]
    if payload_update:
        payload = row["payload"] = dict(row["payload"])
        texts = args[len(args) - 2 * len(payload_update) + 1::2]  # the JSON texts handed to json(?)
        for (key, value), text in zip(payload_update.items(), texts, strict=True):
            payload[key] = value if type(value) is str else json.loads(text)
    return row


def _decode_item(row: dict) -> dict:
    return {
        **row,
        "skills": jload(row.get("skills"), []),
        "payload": jload(row.get("payload"), {}),
        "prompt_versions": jload(row.get("prompt_versions"), []),
    }


class _StoreLock:
    """`Store.lock`: a re-entrant lock that, taken by a thread other than the one batching writes (a lease
    heartbeat, the review page's worker), first commits the batch's open transaction, so that thread never waits
    on SQLite's write lock while holding this one (which the batching thread needs to commit)."""

    def __init__(self, store: Store):
        self._lock = threading.RLock()
        self._store = store

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        batch = self._store._batch
        if got and batch is not None and batch[1] != threading.get_ident() and batch[3].in_transaction:
            batch[3].execute("COMMIT")  # the batching thread is not inside a transaction() block: we hold the lock
        return got

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error); nested uses join the outer transaction."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self):
        store = self.store
        store.lock.acquire()
        store._depth = getattr(store, "_depth", 0) + 1
        if store._depth == 1:
            # inside a tick's open write batch (batch_writes) the group is a savepoint of that transaction
            self.savepoint = store.db.conn.in_transaction
            store.db.conn.execute("SAVEPOINT skillweave_tx" if self.savepoint else "BEGIN IMMEDIATE")
        return store

    def __exit__(self, exc_type, exc, tb):
        store = self.store
        try:
            store._depth -= 1
            if exc_type and store._depth == 0 and store._own is not None:
                store._own.entries.clear()  # what was rolled back may have been followed: the store answers again
            if store._depth == 0 and self.savepoint:
                if exc_type:
                    store.db.conn.execute("ROLLBACK TO skillweave_tx")
                store.db.conn.execute("RELEASE skillweave_tx")
            elif store._depth == 0:
                store.db.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            store.lock.release()
        return False
