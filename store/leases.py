"""One process at a time continues a run: a lease row per run with the holder's liveness.

A lease names its holder (pid, host, the process's start time where /proc has it) and carries a heartbeat the
holder refreshes every HEARTBEAT_SECONDS from a background thread. Another process may take a lease over only
when its holder is gone: on the same host, the pid no longer runs (or now belongs to a process started at
another time); on any host, the heartbeat is older than STALE_SECONDS. Taking over happens inside one
`BEGIN IMMEDIATE` transaction, so two processes that both see a stale lease cannot both win it.
The same liveness test tells `runs list` that a `running` run's process is gone (`interrupted`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid

from skillweave.errors import UsageError
from skillweave.store import Store, like_prefix, now

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0


class LeaseHeld(UsageError):
    """Another live process holds the run."""


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from its first owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def holder_alive(lease: dict, *, stale_seconds: float = STALE_SECONDS) -> bool:
    """Is the process named by a lease (or a review claim with the same fields) still there?"""
    try:
        beat = dt.datetime.fromisoformat(lease["heartbeat_at"])
        if (dt.datetime.now(dt.UTC) - beat).total_seconds() > stale_seconds:
            return False
    except (KeyError, TypeError, ValueError):
        return False
    if lease.get("host") == socket.gethostname():
        pid = int(lease.get("pid") or 0)
        if pid <= 0 or not _pid_alive(pid):
            return False
        started = lease.get("proc_start")
        if started and _proc_start(pid) not in (None, started):
            return False  # the pid was reused by another process
    return True


def me() -> dict:
    """This process's identity as stored in a lease or a claim."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid())}


def describe(lease: dict) -> str:
    return f"pid {lease.get('pid')} on {lease.get('host')} (since {lease.get('acquired_at')})"


def get_lease(store: Store, run_id: str) -> dict | None:
    return store._one("SELECT * FROM run_leases WHERE run_id = ?", [run_id])


class RunLease:
    """`with RunLease(store, run_id):` holds the run for this process, or raises LeaseHeld."""

    def __init__(self, store: Store, run_id: str, command: str = "", heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.store, self.run_id, self.command = store, run_id, command
        self.token = uuid.uuid4().hex
        self.heartbeat_seconds = heartbeat_seconds
        self.lost = False
        self.taken_over: dict | None = None  # the stale lease this one replaced, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RunLease:
        store = self.store
        with store.transaction():
            current = get_lease(store, self.run_id)
            if current is not None and holder_alive(current):
                raise LeaseHeld(f"run {self.run_id} is being continued by {describe(current)}; wait for it to "
                                f"finish or stop it (a killed process's lease is taken over automatically)")
            self.taken_over = current
            stamp = now()
            store.db.conn.execute(
                "INSERT OR REPLACE INTO run_leases (run_id, token, pid, host, proc_start, command, acquired_at, "
                "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [self.run_id, self.token, *me().values(), self.command, stamp, stamp])
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()
        try:
            wait_for_workers(store, self.run_id)
        except LeaseHeld:
            self.release()
            raise
        return self

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.heartbeat_seconds):
                with self.store.lock:
                    updated = self.store.db.conn.execute(
                        "UPDATE run_leases SET heartbeat_at = ? WHERE run_id = ? AND token = ?",
                        [now(), self.run_id, self.token]).rowcount
                if not updated:
                    self.lost = True
                    return
        except Exception:  # the store is closing; the lease simply goes stale
            return
        finally:
            try:
                self.store.close_thread_connection()  # this thread's own connection, if it opened one
            except Exception:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self.store.lock:
            self.store.db.conn.execute("DELETE FROM run_leases WHERE run_id = ? AND token = ?",
                                       [self.run_id, self.token])

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_liveness(store: Store, run: dict) -> str:
    """A run's status as shown to people: a `running` run whose process is gone is `interrupted (process gone)`."""
    if run.get("status") != "running":
        return run.get("status") or ""
    lease = get_lease(store, run["id"])
    if lease is not None:
        return "running" if holder_alive(lease) else "interrupted (process gone)"
    try:  # no lease: a run from before leases, or one in the moment between its creation and its lease
        age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(run["updated_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        age = STALE_SECONDS + 1
    return "running" if age <= STALE_SECONDS else "interrupted (process gone)"


# ---- worker processes of one run (`--workers N`, graphs/workers.py) ----------------------------------------
def worker_lease_id(run_id: str, index: int) -> str:
    """The lease row a worker process of a run holds while it executes its part (`<run id>#worker-<i>`)."""
    return f"{run_id}#worker-{index}"


def live_worker_leases(store: Store, run_id: str) -> list[dict]:
    """The worker leases of a run whose processes still live; rows left by killed workers are deleted."""
    rows = store._all("SELECT * FROM run_leases WHERE run_id LIKE ? ESCAPE '\\'",
                      [like_prefix(f"{run_id}#worker-")])
    alive = [row for row in rows if holder_alive(row)]
    dead = [row for row in rows if row not in alive]
    if dead:
        with store.lock:
            for row in dead:
                store.db.conn.execute("DELETE FROM run_leases WHERE run_id = ? AND token = ?",
                                      [row["run_id"], row["token"]])
    return alive


WORKERS_GONE_SECONDS = 15.0


def wait_for_workers(store: Store, run_id: str, timeout: float = WORKERS_GONE_SECONDS) -> None:
    """The run's lease is only held once no worker process of an earlier holder lives (they die with their parent
    within moments; one on another host counts as gone once its heartbeat is STALE_SECONDS old)."""
    import time

    deadline = time.monotonic() + timeout
    while alive := live_worker_leases(store, run_id):
        if time.monotonic() > deadline:
            raise LeaseHeld(f"run {run_id}: worker process(es) of an earlier invocation still run "
                            f"({'; '.join(describe(row) for row in alive)}); wait for them to end or stop them")
        time.sleep(0.1)
