"""What the store holds about the items a run creates, known in the process that runs them (`Store.own_items`).

While a run executes (graphs/runtime.py), an item whose row this process's own `INSERT` created (`ensure_item`
inserted it, it did not exist before) has had no writer but this process: the runtime holds the run's lease, and
`--workers` and `--shard` give every thread to one process only. For such an item the store's answers to three
per-request questions follow from what this process wrote, so they are answered here without a statement:

- `find_call(key)`: a successful call is stored under `key` only if this process recorded one; a key it never
  recorded is answered "none" without the `SELECT` (a key it did record is looked up as usual, so a thread that
  re-runs from its input, e.g. through LangGraph after the direct executor gave up on it, finds its calls);
- `add_event`: the item's latest event is the last one this process logged for it, so a repeat is recognised
  without the `NOT EXISTS` subquery and a new transition is a plain `INSERT`;
- `own_item(id)`: the item's row as `get_item` would decode it, kept up to date by `update_item`'s hot path,
  so a node does not read back what the previous node just wrote;
- the item's rowid (the `INSERT`'s), so its calls, grades and events are written with their `item_seq` and its
  updates find the row by rowid, without a lookup in the items' primary key (store/migrations/m0160_item_seq.py).

Anything this module cannot follow exactly drops the item (a write through another path, a value whose stored
form could differ from its Python value), and a rolled-back transaction drops every item: a dropped item is
answered by the store's statements again, as any other. A thread's own item (its input's `item_id`) is released
when the thread ends; items a thread creates itself (MATH²'s item per pair draw) stay until the
limit drops them: at most `LIMIT` are kept (the oldest dropped first), so memory follows the concurrency, not
the run size.
"""

from __future__ import annotations

from typing import Any

LIMIT = 4096
_AFFINITY = {"TEXT": str, "INTEGER": int, "FLOAT": float, "REAL": float}


class OwnItem:
    __slots__ = ("keys", "last_event", "row", "seq")

    def __init__(self, row: dict | None, seq: int | None = None):
        self.row = row  # the decoded row (get_item's form), or None when not followed
        self.seq = seq  # the item's rowid (`item_seq` of its calls, grades and events; m0160), None when unknown
        self.keys: set[str] = set()  # call keys this process recorded for the item without an error
        self.last_event: tuple | None = None  # (run id, stage, status, reason) of its latest event; None: none


class OwnItems:
    """The items of one run's execution in this process (see the module docstring)."""

    def __init__(self, columns: dict[str, str], follow_rows: bool = True, limit: int | None = None):
        self.columns = columns  # items column -> declared type
        self._kinds = {c: _AFFINITY.get(t.upper()) for c, t in columns.items()}  # column -> its Python type
        self.follow_rows = follow_rows  # False: rows are never followed (only call keys and events)
        self.limit = LIMIT if limit is None else limit
        self.entries: dict[str, OwnItem] = {}

    def add(self, item_id: str, row: dict | None, seq: int | None = None) -> None:
        if len(self.entries) >= self.limit:
            self.entries.pop(next(iter(self.entries)))
        self.entries[item_id] = OwnItem(row, seq)

    def get(self, item_id: str | None) -> OwnItem | None:
        return self.entries.get(item_id) if item_id is not None else None

    def drop(self, item_id: str | None) -> None:
        self.entries.pop(item_id, None)

    def plain(self, column: str, value: Any) -> bool:
        """Whether SQLite stores `value` in `column` and reads it back as this same Python value (no affinity
        conversion): None, or the column's own type (bool is not an INTEGER here: it reads back as int)."""
        if value is None:
            return column in self._kinds
        return type(value) is self._kinds.get(column)  # never true for an unknown column or declared type
