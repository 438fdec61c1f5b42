"""Spend of runs from their stored model calls: tokens and USD per run and per stage (the call's role).

`cost_usd` is NULL for a call whose model has no known price; such calls are counted as `unpriced` and make the
total a lower bound ("at least $X"), never a silent 0. Failed calls carry no token counts and cost nothing here.
"""

from __future__ import annotations

from skillweave.store import Store

_COLUMNS = ("count(*) calls, sum(error is not null) failed, coalesce(sum(input_tokens), 0) input_tokens, "
            "coalesce(sum(output_tokens), 0) output_tokens, sum(cost_usd) cost_usd, "
            "sum(error is null and cost_usd is null) unpriced")


def _row(row: dict) -> dict:
    row = dict(row)
    for key in ("calls", "failed", "unpriced"):
        row[key] = int(row.get(key) or 0)
    return row


def run_spend(store: Store, run_id: str, *, by_stage: bool = False) -> dict:
    """{calls, failed, input_tokens, output_tokens, cost_usd, unpriced} of one run (cost_usd None when no call
    had a price); with `by_stage`, also `stages`: the same per role (student, judge, ...)."""
    total = _row(store._one(f"SELECT {_COLUMNS} FROM llm_calls WHERE run_id = ?", [run_id]))
    if by_stage:
        total["stages"] = {r.pop("role") or "(none)": _row(r) for r in store._all(
            f"SELECT role, {_COLUMNS} FROM llm_calls WHERE run_id = ? GROUP BY role ORDER BY role", [run_id])}
    return total


_NO_CALLS = {"calls": 0, "failed": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "unpriced": 0}
_SINCE = f"SELECT max(rowid) mark, {_COLUMNS} FROM llm_calls WHERE run_id = ? AND rowid > ?"


class RunningSpend:
    """`run_spend` of one run (without stages), kept current by reading only the calls recorded since the last read.

    A progress line asks for the run's spend every minute (every second on a terminal); summing every call of the
    run each time grows with the run (0.2 s per read at 300,000 calls). Calls are only appended while a run runs,
    and their rowids grow (SQLite gives a new row the largest rowid plus one), so each read sums the rows after
    the largest rowid it has seen, through the `run_id` index (its entries are ordered by rowid within a run). If
    the table's largest rowid falls below that mark (calls deleted), the next read sums the whole run again.
    """

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.mark = 0  # largest rowid summed so far
        self.total = dict(_NO_CALLS)

    def read(self) -> dict:
        (largest,) = self.store.db.conn.execute("SELECT coalesce(max(rowid), 0) FROM llm_calls").fetchone()
        if largest < self.mark:
            self.mark, self.total = 0, dict(_NO_CALLS)
        new = self.store._one(_SINCE, [self.run_id, self.mark])
        if new["mark"] is not None:
            self.mark = new.pop("mark")
            new, total = _row(new), self.total
            for key in ("calls", "failed", "input_tokens", "output_tokens", "unpriced"):
                total[key] += new[key] or 0
            if new["cost_usd"] is not None:
                total["cost_usd"] = (total["cost_usd"] or 0.0) + new["cost_usd"]
        return dict(self.total)


def runs_spend(store: Store, run_ids: list[str]) -> dict[str, dict]:
    """run_spend for several runs in one query."""
    if not run_ids:
        return {}
    marks = ",".join("?" * len(run_ids))
    rows = store._all(f"SELECT run_id, {_COLUMNS} FROM llm_calls WHERE run_id IN ({marks}) GROUP BY run_id", run_ids)
    found = {r.pop("run_id"): _row(r) for r in rows}
    empty = {"calls": 0, "failed": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "unpriced": 0}
    return {run_id: found.get(run_id, dict(empty)) for run_id in run_ids}


def format_spend(spend: dict) -> str:
    """'$0.0123', 'at least $0.0123 (4 calls unpriced)', 'unknown (4 calls unpriced)' or '$0' (no calls)."""
    cost, unpriced = spend.get("cost_usd"), spend.get("unpriced", 0)
    if not unpriced:
        return f"${cost or 0:.4f}" if spend.get("calls") else "$0"
    if cost is None:
        return f"unknown ({unpriced} calls unpriced)"
    return f"at least ${cost:.4f} ({unpriced} calls unpriced)"
