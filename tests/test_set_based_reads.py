"""`report`, `export` and `items list` read a run in a constant number of SQL statements, whatever its size."""

from __future__ import annotations

import json

import pytest

from skillweave.store import Store


def _fill(db_path: str, n: int) -> str:
    """A Skill-Mix run of n graded items (two judge samples each); every third item reviewed, some edited."""
    store = Store(db_path)
    run_id = store.create_run("skillmix", {"k": [2], "n": n, "seed": 0}, command="test")
    store.put_prompt_version("b2:v1", "skillmix/student", "text")
    for i in range(n):
        status = "failed" if i % 7 == 3 else "done"
        item = store.ensure_item(run_id, "skillmix.text", i, 0, k=2, skills=["metaphor", "red herring"],
                                 topic="gardening", status=status, prompt_versions=["b2:v1"],
                                 payload={"prompt_0": f"Write about gardening #{i}", "text_1": f"text {i}"})
        for sample in range(2):
            points = [1, 1, 1, 1, i % 2] if sample == 0 else [1, 1, 0, 1, i % 2]
            store.add_grade(item, run_id, sample, judge="fake", points=points, score=sum(points),
                            parse_status="ok")
        if i % 3 == 0:
            store.add_review(item, run_id, "ann", "reject" if i % 9 == 0 else "edit",
                             changes={"text_1": f"edited {i}"})
    store.close()
    return run_id


@pytest.fixture
def count_statements(monkeypatch):
    """Counts every SQL statement run on any store connection opened after it is set up."""
    counter = {"n": 0}
    original = Store._connect

    def connect(self):
        db = original(self)
        db.conn.set_trace_callback(lambda _sql: counter.__setitem__("n", counter["n"] + 1))
        return db

    monkeypatch.setattr(Store, "_connect", connect)
    return counter


@pytest.mark.parametrize("command", [
    ("report", "latest", "--json"),
    ("items", "list", "latest", "--json"),
    ("items", "list", "latest"),
    ("export", "latest", "--out", "{out}", "--format", "jsonl"),
])
def test_statement_count_does_not_grow_with_the_run(tmp_path, cli_run, count_statements, command):
    counts = {}
    for n in (10, 100):
        db = str(tmp_path / f"store-{n}.db")
        _fill(db, n)
        args = [a.replace("{out}", str(tmp_path / f"out-{n}.jsonl")) for a in command]
        count_statements["n"] = 0
        code, out, err = cli_run(*args, db=db)
        assert code == 0, err
        counts[n] = count_statements["n"]
    assert counts[100] == counts[10], counts


def test_set_based_export_and_report_match_the_per_item_reads(tmp_path, cli_run):
    from skillweave.export import latest_review, voted_points
    from skillweave.store.reads import items_with_grades

    db = str(tmp_path / "s.db")
    run_id = _fill(db, 30)
    store = Store(db)
    for item in items_with_grades(store, run_id, reviews=True):
        assert item["grades"] == [{k: g[k] for k in ("sample_index", "points", "score", "parse_status", "judge")}
                                  for g in store.grades(item["id"])]
        expected = latest_review(store, item["id"])
        assert item["latest_review"] == (None if expected is None else {k: expected[k] for k in expected})
    assert [i["id"] for i in items_with_grades(store, run_id, grades=False)] == [i["id"] for i in store.items(run_id)]
    assert voted_points(store, next(store.items(run_id))["id"]) == [1.0, 1.0, 0.0, 1.0, 0.0]
    code, out, err = cli_run("export", run_id, "--out", str(tmp_path / "x.jsonl"), db=db)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    # rejected items (i % 9 == 0) are dropped, edits applied, failed items (i % 7 == 3) left out
    kept = [i for i in range(30) if i % 9 != 0 and i % 7 != 3]
    assert [r["output"] for r in rows] == [f"edited {i}" if i % 3 == 0 else f"text {i}" for i in kept]
    assert "b2:v1" in (tmp_path / "x.jsonl.card.md").read_text()


def test_items_list_json_streams_the_same_text_as_before(tmp_path, cli_run):
    from skillweave.cli.common import echo_json

    db = str(tmp_path / "s.db")
    run_id = _fill(db, 5)
    code, out, _ = cli_run("items", "list", run_id, "--json", db=db)
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 5
    import click.testing

    runner = click.testing.CliRunner()
    expected = runner.invoke(click.command()(lambda: echo_json(rows)), []).output
    assert out == expected
    code, out, _ = cli_run("items", "list", run_id, "--json", "--status", "nothing", db=db)
    assert out.strip() == "[]"


def test_vote_matches_numpys_rounded_mean():
    import random

    import numpy as np

    from skillweave.export import _vote

    rng = random.Random(0)
    for _ in range(500):
        n, width = rng.randint(1, 5), rng.randint(1, 7)
        samples = [[rng.choice([0, 1, 0.5, 1.0]) for _ in range(width + rng.randint(0, 2))] for _ in range(n)]
        w = min(len(s) for s in samples)
        expected = [float(v) for v in np.rint(np.asarray([s[:w] for s in samples], dtype=float).mean(axis=0))]
        assert _vote([{"points": s} for s in samples]) == expected
    assert _vote([{"points": []}]) is None


# The record-by-record aggregation the vectorised `aggregate_records` replaced (kept here as the reference).
import numpy as np  # noqa: E402

from skillweave.metrics.skillmix import generation_metrics  # noqa: E402


def _reference_aggregate_records(records: list[tuple[int, int, list[list[float]]]], k: int,
                      across_rounds: str = "max") -> dict[str, dict[str, float]]:
    """Ragged form of `aggregate`: records of (combination, round, samples[R][k+3]) for one k.

    Rounds with no grade (failed items) are left out; a combination enters with the rounds it has.
    """
    by_combo: dict[int, list[dict[str, float]]] = {}
    for combo, _round, samples in records:
        if not samples:
            continue
        voted = np.rint(np.asarray(samples, dtype=float).mean(axis=0))
        by_combo.setdefault(combo, []).append({k_: float(v) for k_, v in generation_metrics(voted, k).items()})
    out = {}
    for name in generation_metrics(np.zeros(k + 3), k):
        per_combo = np.array([
            (max if across_rounds == "max" else lambda xs: sum(xs) / len(xs))([g[name] for g in gens])
            for gens in by_combo.values()
        ])
        m = len(per_combo)
        out[name] = {
            "mean": float(per_combo.mean()) if m else float("nan"),
            "se": float(per_combo.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan"),
            "n": m,
        }
    return out


def test_vectorised_aggregate_records_equals_the_record_by_record_one():
    import random

    from skillweave.metrics.skillmix import aggregate_records

    rng = random.Random(1)
    for k in (2, 3, 4):
        records = []
        for combo in range(40):
            for rnd in range(rng.randint(1, 3)):
                n = rng.choice([0, 1, 2, 3, 5])
                records.append((combo * 7 % 13 + combo, rnd, [[rng.choice([0, 1, 0.5]) for _ in range(k + 3)]
                                                              for _ in range(n)]))
        rng.shuffle(records)
        for mode in ("max", "mean"):
            assert aggregate_records(records, k, mode) == _reference_aggregate_records(records, k, mode)
    assert aggregate_records([], 2)["sum"]["n"] == 0
