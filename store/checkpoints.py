"""LangGraph's checkpoint tables inside the store's file: the checkpointer a run uses, and one read of it.

The checkpointer shares the store's connection (one connection per thread, so no write-lock contention between
the store and LangGraph), and its `setup()` creates LangGraph's `checkpoints` and `writes` tables under the
store's lock. `graphs/runtime.py` gets both from here, so nothing outside `store/` touches the connection.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from langgraph.checkpoint.sqlite import SqliteSaver

from skillweave.store import Store

_CHUNK = 500  # thread ids per statement, below SQLite's variable limit


class StoreCheckpointer(SqliteSaver):
    """LangGraph's SQLite checkpointer on the store's own connection, awaited without a thread hop.

    Checkpoint reads and writes take tens of microseconds, so running them inline on the event loop is cheaper
    than aiosqlite's worker-thread round trips, and one connection means no write-lock contention between the
    store and the checkpointer. Nodes never await inside a store transaction, so the saver's commits cannot
    interleave with one.
    """

    async def aget_tuple(self, config):
        return self.get_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config, checkpoint, metadata, new_versions):
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path=""):
        return self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id):
        return self.delete_thread(thread_id)


def store_checkpointer(store: Store) -> StoreCheckpointer:
    """A checkpointer on this thread's connection to the store, its tables created if missing."""
    saver = StoreCheckpointer(store.db.conn)
    with store.lock:
        saver.setup()
    return saver


@asynccontextmanager
async def checkpointer(store: Store):
    """The checkpointer for a run: LangGraph's `checkpoints`/`writes` tables inside the store's file."""
    yield store_checkpointer(store)


def threads_with_checkpoints(saver: SqliteSaver, thread_ids: list[str]) -> set[str]:
    """One query per 500 threads instead of a state lookup per thread: which threads have any checkpoint."""
    found: set[str] = set()
    with saver.cursor(transaction=False) as cur:
        for start in range(0, len(thread_ids), _CHUNK):
            chunk = thread_ids[start:start + _CHUNK]
            cur.execute(f"SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id IN ({','.join('?' * len(chunk))})",
                        chunk)
            found.update(row[0] for row in cur.fetchall())
    return found
