"""The Skill-Mix report reads a run as a stream: the same numbers bit for bit, memory that does not grow with it.

`metrics/streamed.py` reduces spilled per-combination values in numpy's summation order; `StreamedAggregate`
votes and scores records a batch at a time. Both are compared with numpy / `aggregate_records` on the whole
arrays (`repr` of every float, so -0.0, nan and the last bit count), with small blocks and batches so that
combinations span batch boundaries and the summation tree has many levels.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from skillweave.metrics import skillmix, streamed
from skillweave.metrics.skillmix import StreamedAggregate, aggregate_records, run_report
from skillweave.metrics.streamed import SpilledColumns
from skillweave.store import Store, jdump, now, stable_id


def _numpy_mean_se(column: np.ndarray) -> tuple[float, float]:
    m = len(column)
    mean = float(column.mean()) if m else float("nan")
    se = float(column.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
    return mean, se


@pytest.mark.parametrize("leaf", [128, 136, 300, 1 << 14])
def test_spilled_mean_se_equal_numpy_bit_for_bit(monkeypatch, leaf):
    monkeypatch.setattr(streamed, "LEAF", leaf)
    rng = np.random.default_rng(leaf)
    sizes = [0, 1, 2, 7, 8, 9, 15, 16, 17, 100, 127, 128, 129, 255, 256, 257, 1000, 4099, 20011]
    for n in sizes:
        table = np.column_stack([
            rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n),  # magnitudes that make the order count
            rng.integers(0, 2, n).astype(float),
            rng.random(n) / 3,
            -np.zeros(n),  # -0.0 everywhere
        ])
        with SpilledColumns(table.shape[1]) as spilled:
            for start in range(0, n, 97):  # appended in uneven pieces
                spilled.append(table[start:start + 97])
            got = spilled.mean_se()
        for j in range(table.shape[1]):
            assert repr(got[j]) == repr(_numpy_mean_se(np.ascontiguousarray(table[:, j]))), (n, j)


def test_spilled_mean_se_at_numpys_full_size():
    """Default block size, a column longer than it (the top of the tree is summed here, not by numpy)."""
    rng = np.random.default_rng(7)
    n = 3 * streamed.LEAF + 5
    column = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 9, n)
    with SpilledColumns(1) as spilled:
        spilled.append(column[:, None])
        assert repr(spilled.mean_se()[0]) == repr(_numpy_mean_se(column))


def test_spilled_columns_keep_nan_and_inf():
    for column in ([1.0, np.nan, 2.0], [np.inf, 1.0], [np.inf, -np.inf, 0.0]):
        column = np.array(column * 40)
        with SpilledColumns(1) as spilled:
            spilled.append(column[:, None])
            assert repr(spilled.mean_se()[0]) == repr(_numpy_mean_se(column))


def _records(rng, k: int, combos: int, ragged_r: bool) -> list[tuple[int, int, list[list[float]]]]:
    out = []
    for combo in range(combos):
        rounds = int(rng.integers(1, 4)) if rng.random() < 0.8 else int(rng.integers(4, 13))  # > 8: order counts
        for rnd in range(rounds):
            r = int(rng.integers(1, 11)) if ragged_r else 3  # up to 10 samples: numpy's pairwise range too
            if rng.random() < 0.05:
                out.append((combo, rnd, []))  # no grade: left out
                continue
            samples = rng.integers(0, 2, (r, k + 3)).astype(float)
            if rng.random() < 0.1:
                samples[0, 0] = rng.choice([0.5, 2.0, -0.0, np.nan])  # unclipped and odd points
            out.append((combo, rnd, samples.tolist()))
    return out


@pytest.mark.parametrize("across_rounds", ["max", "mean"])
@pytest.mark.parametrize("batch", [1, 2, 5, 64, 4096])
def test_streamed_aggregate_equals_aggregate_records(monkeypatch, across_rounds, batch):
    monkeypatch.setattr(skillmix, "STREAM_BATCH", batch)
    monkeypatch.setattr(streamed, "LEAF", 128)
    rng = np.random.default_rng(batch)
    for k, combos, ragged in ((1, 1, False), (2, 40, True), (3, 700, False), (4, 257, True), (5, 300, False)):
        records = _records(rng, k, combos, ragged)
        stream = StreamedAggregate(k, across_rounds)
        for combo, _round, samples in records:
            stream.add(combo, samples)
        assert repr(stream.result()) == repr(aggregate_records(records, k, across_rounds)), (k, combos)


def test_streamed_aggregate_of_nothing_and_ragged_samples():
    assert repr(StreamedAggregate(3).result()) == repr(aggregate_records([], 3))
    with pytest.raises(ValueError):
        StreamedAggregate(2).add(0, [[1, 1, 1, 1, 1], [1, 1]])


def _fill(path: str, n: int) -> tuple[Store, dict]:
    store = Store(path)
    run_id = store.create_run("skillmix", {"k": [3], "n": n, "seed": 0}, command="test")
    stamp, items, grades = now(), [], []
    for i in range(n):
        item_id = store.item_id(run_id, "skillmix.text", i, 0)
        items.append((item_id, run_id, "skillmix.text", i, 0, 3, jdump(["a", "b", "c"]), "t", "done", "{}", "[]",
                       stamp, stamp))
        for s in range(2):
            points = [1, 1, 1, i % 2, 1, (i + s) % 3 and 1]
            grades.append((stable_id(item_id, "j", s), item_id, run_id, "j", s, jdump(points), sum(points), "ok",
                           stamp))
    with store.transaction():
        store.db.conn.executemany(
            "INSERT INTO items (id, run_id, kind, combo_index, round, k, skills, topic, status, payload,"
            " prompt_versions, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", items)
        store.db.conn.executemany(
            "INSERT INTO grades (id, item_id, run_id, judge, sample_index, points, score, parse_status, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?)", grades)
    return store, store.get_run(run_id)


def test_report_memory_does_not_grow_with_the_run(tmp_path, monkeypatch):
    """Python heap peak of the Skill-Mix report at 2,000 and 16,000 items (small batches and summation blocks, so
    both sizes hold several; rows are read 1,024 at a time, so both are above that): flat. The code that kept
    every item's samples until it aggregated peaked at 1.5 and 13.8 MB here (9x)."""
    monkeypatch.setattr(skillmix, "STREAM_BATCH", 128, raising=False)
    monkeypatch.setattr(streamed, "LEAF", 256)
    peaks, reports = [], []
    for n in (2000, 16000):
        store, run = _fill(str(tmp_path / f"r{n}.db"), n)
        run_report(store, run)  # warm: imports, statement caches
        tracemalloc.start()
        reports.append(run_report(store, run))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        store.close()
    assert reports[1]["metrics"]["3"]["Ratio of Full Marks"]["n"] == 16000
    assert peaks[1] < 1.5 * peaks[0], peaks
