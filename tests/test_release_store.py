"""A store written by the release before typed settings (tests/fixtures/README.md says how it was made):
its stored configs load into today's models, every run resumes and reports, a paused review continues."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from skillweave.errors import ConfigError
from skillweave.pipelines import get_pipeline
from skillweave.pipelines.skillmix import SkillMixConfig

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0-c32c4dd.db.gz"
PIPELINES = {"skillmix", "instruct-skillmix", "conceptmix", "chart-eval", "math2", "math2-eval", "extract-skills",
             "solve"}


@pytest.fixture
def old_db(tmp_path) -> str:
    path = tmp_path / "release.db"
    with gzip.open(FIXTURE) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return str(path)


def _runs(db: str) -> list[tuple[str, str, dict]]:
    with sqlite3.connect(db) as conn:
        return [(i, p, json.loads(c)) for i, p, c in conn.execute("select id, pipeline, config from runs order by id")]


def test_every_stored_config_loads_into_its_model_unchanged(old_db):
    runs = _runs(old_db)
    assert {p for _, p, _ in runs} == PIPELINES
    for _run_id, pipeline, stored in runs:
        config = get_pipeline(pipeline).load_config(stored)
        dumped = config.model_dump()
        assert {k: dumped[k] for k in stored} == stored, pipeline  # every stored value read back as it was


@pytest.mark.parametrize("pipeline", sorted(PIPELINES - {"chart-eval"}))
def test_resume_and_report_a_run_of_the_release(old_db, cli_run, pipeline):
    run_id = next(i for i, p, _ in _runs(old_db) if p == pipeline)
    with sqlite3.connect(old_db) as conn:
        calls_before = conn.execute("select count(*) from llm_calls").fetchone()[0]
    code, _out, err = cli_run("resume", run_id, db=old_db)
    assert code == 0, err
    code, out, err = cli_run("report", run_id, "--json", db=old_db)
    assert code == 0, err
    assert json.loads(out)
    with sqlite3.connect(old_db) as conn:
        status = conn.execute("select status from runs where id = ?", [run_id]).fetchone()[0]
        calls_after = conn.execute("select count(*) from llm_calls").fetchone()[0]
    assert status in ("done", "paused")
    assert calls_after == calls_before  # a finished run of the release: every reply came from the store


def test_chart_eval_run_of_the_release_reports(old_db, cli_run):
    """Its chart folder lived in the release author's temp dir; the report needs only the store."""
    run_id = next(i for i, p, _ in _runs(old_db) if p == "chart-eval")
    code, out, err = cli_run("report", run_id, "--json", db=old_db)
    assert code == 0, err


def test_a_review_paused_by_the_release_continues_from_its_checkpoint(old_db, cli_run):
    code, out, err = cli_run("review", "list", "--json", db=old_db)
    assert code == 0, err
    (waiting,) = json.loads(out)
    code, out, err = cli_run("review", "approve", waiting["item_id"], "--as", "dana", db=old_db)
    assert code == 0, err
    with sqlite3.connect(old_db) as conn:
        status, run_status = conn.execute(
            "select i.status, r.status from items i join runs r on r.id = i.run_id where i.id = ?",
            [waiting["item_id"]]).fetchone()
    assert (status, run_status) == ("accepted", "done")


def test_a_misspelt_setting_is_an_error_not_ignored(old_db, cli_run):
    with pytest.raises(ValidationError, match="max_round"):
        SkillMixConfig(max_round=5)
    with pytest.raises(ConfigError, match="max_round: unknown setting"):
        get_pipeline("math2").load_config({"bank_catalog": "b", "max_round": 5})
    code, _out, err = cli_run("run", "skillmix", "--model", "fake", "--max-round", "5", db=old_db)
    assert code == 2 and err.startswith("Error: No such option '--max-round'")
    run_id = next(i for i, p, _ in _runs(old_db) if p == "skillmix")
    with sqlite3.connect(old_db) as conn:  # a stored config with a typo stops resume before any write
        config = json.loads(conn.execute("select config from runs where id = ?", [run_id]).fetchone()[0])
        conn.execute("update runs set config = ? where id = ?", [json.dumps({**config, "max_round": 5}), run_id])
    code, _out, err = cli_run("resume", run_id, db=old_db)
    assert code == 2 and "max_round: unknown setting" in err and "Traceback" not in err
    with sqlite3.connect(old_db) as conn:
        assert conn.execute("select status from runs where id = ?", [run_id]).fetchone()[0] == "done"


def test_range_checks_come_from_the_model(cli_run, db_path):
    code, _out, err = cli_run("run", "skillmix", "--model", "fake", "--grading-samples", "0")
    assert code == 2 and "--grading-samples" in err
    code, out, _err = cli_run("run", "skillmix", "--help")
    assert "--judge-temperature" in out and "--student-template" in out  # settings the old CLI could not set
