"""Applies review decisions in the background, so the page never waits on a model while it serves.

A decision is recorded at once: `claim_decision` checks it and claims the item (status `deciding`, the claim
naming this process and the decision). Resuming the item's thread, which may call models (a rejected MATH²
question draws a new pair), runs in a worker thread per run: decisions on one run queued meanwhile are resumed
together in one `run_pipeline` call (the run's lease allows one process, and one call, at a time); decisions on
other runs go on in parallel. Each job's state (queued, running, done, failed) is listed on the queue page. If
the server dies mid-resume, its claims are reopened for the next reviewer (agents.review.reopen_dead_claims).
"""

from __future__ import annotations

import threading
import uuid

from skillweave.decisions import apply_claimed_decisions
from skillweave.store import Store, now


class BackgroundResumer:
    def __init__(self, store: Store, *, prompts_dir: str | None = None, allow_changed_prompts: bool = False,
                 keep: int = 50):
        self.store, self.prompts_dir, self.keep = store, prompts_dir, keep
        self.allow_changed_prompts = allow_changed_prompts
        self._lock = threading.Lock()
        self._jobs: list[dict] = []  # newest first
        self._queued: dict[str, list[tuple[dict, dict, dict]]] = {}  # run id -> (job, request, decision)
        self._workers: dict[str, threading.Thread] = {}
        self._idle = threading.Condition(self._lock)

    def submit(self, item_id: str, request: dict, decision: dict) -> dict:
        """Queue a claimed decision; returns its job (a dict updated in place as it progresses)."""
        run_id = request["run_id"]
        job = {"id": uuid.uuid4().hex[:12], "item_id": item_id, "run_id": run_id, "action": decision["action"],
               "reviewer": decision.get("reviewer") or "", "state": "queued", "status": "", "error": "",
               "submitted_at": now(), "finished_at": "", "done": threading.Event()}
        with self._lock:
            self._jobs.insert(0, job)
            del self._jobs[self.keep:]
            self._queued.setdefault(run_id, []).append((job, request, decision))
            if run_id not in self._workers:
                worker = threading.Thread(target=self._work, args=(run_id,), name=f"resume-{run_id}", daemon=True)
                self._workers[run_id] = worker
                worker.start()
        return job

    def _work(self, run_id: str) -> None:
        try:
            self._drain(run_id)
        finally:
            self.store.close_thread_connection()  # the worker ends; its SQLite connection goes with it

    def _drain(self, run_id: str) -> None:
        while True:
            with self._lock:
                batch = self._queued.pop(run_id, [])
                if not batch:
                    del self._workers[run_id]
                    self._idle.notify_all()
                    return
                for job, _, _ in batch:
                    job["state"] = "running"
            try:
                results = apply_claimed_decisions(self.store, [(j["item_id"], r, d) for j, r, d in batch],
                                                  prompts_dir=self.prompts_dir,
                                                  allow_changed_prompts=self.allow_changed_prompts)
            except Exception as exc:  # never lose the worker: report it on every job of the batch
                results = [exc] * len(batch)
            with self._lock:
                for (job, _, _), result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        job.update(state="failed", error=f"{result}" or type(result).__name__)
                    else:
                        job.update(state="done", status=result["status"])
                    job["finished_at"] = now()
                    job["done"].set()

    def jobs(self) -> list[dict]:
        """The recent jobs, newest first (copies, without their events)."""
        with self._lock:
            return [{k: v for k, v in job.items() if k != "done"} for job in self._jobs]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running (tests, shutdown); False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._workers, timeout=timeout)
