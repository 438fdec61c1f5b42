"""`charts export` output read the way the official CharXiv evaluator reads it.

The readers below transcribe what CharXiv's `evaluate.py` (through its descriptive/reasoning helpers) and
`get_stats.py` take from the files: `response` per `{figure_id}_{i}` key, `raw_question` and `response` per
figure id, `score` per key, and the stats layout (numbers per official group, N_valid / N_invalid). With
SKILLWEAVE_OFFICIAL_CHARXIV pointing at a checkout of princeton-nlp/CharXiv, one more test runs its own
functions on the export and compares the stats it computes with ours.
"""

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from skillweave.charts.synthetic import generate_synthetic_set
from skillweave.cli import cli
from skillweave.providers.core import clear_providers
from skillweave.store import Store

SUBJECTS = ["Computer Science", "Economics", "Electrical Engineering and Systems Science", "Mathematics",
            "Physics", "Quantitative Biology", "Quantitative Finance", "Statistics"]
ABBR = dict(zip(["cs", "econ", "eess", "math", "physics", "q-bio", "q-fin", "stat"], SUBJECTS, strict=True))
GROUPS = {"Information Extraction": range(1, 8), "Enumeration": (8, 9, 13, 14, 15),
          "Pattern Recognition": (11, 16, 18), "Counting": (10, 12, 19), "Compositionality": (17,)}


def _pct(v):
    return round(100 * sum(v) / len(v), 2) if v else 0


def _subplots(n):
    return "1 Subplot" if n == 1 else "2-4 Subplots" if n <= 4 else "5+ Subplots"


def official_stats(scores, dmeta, rmeta, imeta, mode):
    """get_descriptive_scores / get_reasoning_scores + get_stats, transcribed."""
    common = {"By Subject": {s: [] for s in SUBJECTS}, "By Year": {y: [] for y in ("2020", "2021", "2022", "2023")},
              "By Subplot": {b: [] for b in ("1 Subplot", "2-4 Subplots", "5+ Subplots")}}
    if mode == "descriptive":
        stats = {"By Question": {f"Q{i}": [] for i in range(1, 20)}, "By Category": {g: [] for g in GROUPS}, **common}
    else:
        stats = {"By Answer Type": {a: [] for a in ("Text-in-Chart", "Text-in-General", "Number-in-Chart",
                                                    "Number-in-General")},
                 "By Source": {s: [] for s in ("GPT-Sourced", "GPT-Inspired", "Completely Human")}, **common}
    overall, valid, invalid = [], 0, 0
    for k in (dmeta if mode == "descriptive" else rmeta):
        entries = [(f"{k}_{i}", dmeta[k]["qids"][i]) for i in range(4)] if mode == "descriptive" else [(k, None)]
        for key, qnum in entries:
            score = scores[key]["score"]
            if score not in [0, 1]:
                invalid += 1
                score = 0
            valid += 1
            overall.append(score)
            stats["By Subject"][ABBR[imeta[k]["category"]]].append(score)
            stats["By Year"]["20" + imeta[k]["year"]].append(score)
            stats["By Subplot"][_subplots(dmeta[k]["num_subplots"])].append(score)
            if mode == "descriptive":
                stats["By Category"][next(g for g, q in GROUPS.items() if qnum in q)].append(score)
                stats["By Question"][f"Q{qnum}"].append(score)
            else:
                stats["By Answer Type"][list(stats["By Answer Type"])[rmeta[k]["inst_category"] - 1]].append(score)
                stats["By Source"][list(stats["By Source"])[rmeta[k]["qa_source"] - 1]].append(score)
    out = {b: {g: _pct(v) for g, v in cells.items()} for b, cells in stats.items()}
    return {"Overall Score": _pct(overall), **out, "N_valid": valid, "N_invalid": invalid,
            "Question Type": mode.capitalize()}


@pytest.fixture
def exported(tmp_path):
    clear_providers()
    data = tmp_path / "data"
    generate_synthetic_set(data, n=4, seed=3)
    reasoning = json.loads((data / "reasoning_val.json").read_text())
    for r in reasoning.values():  # the official stats know sources 1-3 only; the synthetic set uses 4
        r["qa_source"] = 3
    (data / "reasoning_val.json").write_text(json.dumps(reasoning))
    db = tmp_path / "c.db"
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", str(db), "run", "chart-eval", "--data", str(data), "--model", "fake",
                                 "--judge", "fake", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["--db", str(db), "charts", "export", "latest", "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    yield data, tmp_path / "results", db
    clear_providers()


def _load(folder, prefix, mode):
    return json.loads((folder / f"{prefix}-fake-{mode}_val.json").read_text())


def _meta(data):
    return [json.loads((data / f"{n}_val.json").read_text()) for n in ("descriptive", "reasoning", "image_metadata")]


def test_export_has_what_the_official_evaluator_reads(exported):
    data, results, _ = exported
    dmeta, rmeta, imeta = _meta(data)
    gen_d, gen_r = _load(results, "gen", "descriptive"), _load(results, "gen", "reasoning")
    for d in dmeta.values():  # preprocess_descriptive_grading_queries
        for i, _ in enumerate(d["qids"]):
            assert isinstance(gen_d[f"{d['figure_id']}_{i}"]["response"], str)
    for r in rmeta.values():  # build_reasoning_grading_queries
        entry = gen_r[str(r["figure_id"])]
        assert entry["raw_question"] == r["query"] and isinstance(entry["response"], str)
    for mode in ("descriptive", "reasoning"):
        scores, stats = _load(results, "scores", mode), _load(results, "stats", mode)
        expected = official_stats(scores, dmeta, rmeta, imeta, mode)
        assert {k: v for k, v in stats.items() if k != "N_ungraded"} == expected
        assert stats["N_ungraded"] == 0


def test_ungraded_rows_are_left_out_not_invalid(exported, tmp_path):
    _, _, db = exported
    store = Store(db)
    run_id = store.get_run("latest")["id"]
    item = next(i for i in store.items(run_id) if i["payload"]["question"]["mode"] == "reasoning")
    store.update_item(item["id"], payload_update={"judge_status": None})  # as if the run stopped before grading
    result = CliRunner().invoke(cli, ["--db", str(db), "charts", "export", run_id, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    key = item["payload"]["question"]["key"]
    scores, stats = _load(tmp_path / "again", "scores", "reasoning"), _load(tmp_path / "again", "stats", "reasoning")
    assert key not in scores and all(v["score"] in (0, 1) for v in scores.values())
    assert stats["N_invalid"] == 0 and stats["N_ungraded"] == 1 and stats["N_valid"] == len(scores)
    assert key in _load(tmp_path / "again", "gen", "reasoning")  # its response is still exported


OFFICIAL = os.environ.get("SKILLWEAVE_OFFICIAL_CHARXIV")


@pytest.mark.skipif(not OFFICIAL, reason="set SKILLWEAVE_OFFICIAL_CHARXIV to a checkout of princeton-nlp/CharXiv")
def test_official_functions_read_the_export(exported):
    data, results, _ = exported
    sys.path.insert(0, str(Path(OFFICIAL) / "src"))
    try:
        import get_stats
        from descriptive_utils import (
            build_descriptive_grading_queries,
            preprocess_descriptive_grading_queries,
        )
        from reasoning_utils import build_reasoning_grading_queries
    finally:
        sys.path.pop(0)
    dmeta, rmeta, imeta = _meta(data)
    assert build_descriptive_grading_queries(preprocess_descriptive_grading_queries(dmeta, _load(results, "gen", "descriptive")))
    assert len(build_reasoning_grading_queries(rmeta, _load(results, "gen", "reasoning"))) == len(rmeta)
    for mode, fn in (("descriptive", get_stats.get_descriptive_scores), ("reasoning", get_stats.get_reasoning_scores)):
        theirs = get_stats.get_stats(fn(_load(results, "scores", mode), dmeta, rmeta, imeta))
        ours = {k: v for k, v in _load(results, "stats", mode).items() if k != "N_ungraded"}
        assert ours == theirs
