"""Released `b2:` template versions (prompts/legacy_versions.json): a run pinned to one continues with today's
packaged file when what it sends (`b3:`) is unchanged, and stops with the "template changed" error otherwise."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from skillweave.prompts import PACKAGE_DIR, content_version, load_template
from skillweave.prompts import legacy as legacy_versions
from skillweave.prompts.legacy import _sends, as_released, build, released_b3
from skillweave.store import Store

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0-c32c4dd.db.gz"
OLD_COT = "b2:bb012e19abc80177"  # solve/cot as the release stored it (its description cited the external file)


@pytest.fixture
def release_db(tmp_path) -> str:
    path = tmp_path / "release.db"
    path.write_bytes(gzip.decompress(RELEASE.read_bytes()))
    return str(path)


def _solve_run(db: str) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("select id from runs where pipeline = 'solve'").fetchone()[0]


def _count(db: str, sql: str, args=()) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, list(args)).fetchone()[0]


def _forget_checkpoints(db: str, run_id: str) -> None:
    """Drop the run's LangGraph checkpoints: every thread runs all its nodes again, so every model call is
    asked again, and only matching call keys keep them from being made."""
    with sqlite3.connect(db) as conn:
        for table in ("checkpoints", "writes"):
            conn.execute(f"delete from {table} where thread_id like ?", [run_id + ":%"])


def test_the_table_agrees_with_the_release_store(release_db):
    """Every template version the release stored (with its full text) is listed, with the `b3:` of that text."""
    with sqlite3.connect(release_db) as conn:
        rows = conn.execute("select id, name, text from prompt_versions").fetchall()
    assert {name for _, name, _ in rows} >= {"skill_extraction/cluster", "skill_extraction/label", "solve/cot",
                                             "solve/pick_skill"}
    for version, name, text in rows:
        assert content_version(text) == version, name
        if (PACKAGE_DIR / f"{name}.yaml").is_file():
            assert released_b3(name, version) == _sends(name, text), name


@pytest.mark.parametrize("name", ["skill_extraction/cluster", "skill_extraction/relabel", "skill_extraction/label",
                                  "skill_extraction/propose_query_types", "skill_extraction/propose_skills",
                                  "solve/cot", "solve/pick_skill"])
def test_the_rewritten_descriptions_kept_what_is_sent(name):
    template = load_template(name)
    released = legacy_versions._table()[name]
    assert template.legacy_version not in released or len(released) > 1  # the file changed since its release
    assert template.version in {entry["b3"] for entry in released.values()}  # what it sends did not


def test_as_released_needs_the_pinned_versions_b3(monkeypatch):
    cot = load_template("solve/cot").in_scheme("b2")
    assert cot.version != OLD_COT
    assert as_released(cot, {OLD_COT}).version == OLD_COT
    assert as_released(cot.in_scheme("b3"), {OLD_COT}).version == cot.in_scheme("b3").version  # b3 runs: as is
    assert as_released(cot, {"b2:0000000000000000"}).version == cot.version  # not a released version
    assert as_released(cot, None).version == cot.version
    monkeypatch.setattr(legacy_versions, "_table",
                        lambda: {"solve/cot": {OLD_COT: {"b3": "b3:0000000000000000", "commit": "x"}}})
    assert as_released(cot, {OLD_COT}).version == cot.version  # released, but it sent something else


def test_a_release_run_pinned_to_an_old_b2_resumes_without_new_calls(release_db, cli_run):
    run_id = _solve_run(release_db)
    assert _count(release_db, "select count(*) from llm_calls where run_id = ? and prompt_version = ?",
                  [run_id, OLD_COT]) == 6
    assert load_template("solve/cot").in_scheme("b2").version != OLD_COT  # the description was rewritten
    calls = _count(release_db, "select count(*) from llm_calls")
    _forget_checkpoints(release_db, run_id)
    code, _out, err = cli_run("resume", run_id, db=release_db)
    assert code == 0, err
    assert _count(release_db, "select count(*) from llm_calls") == calls  # every reply came from the store
    with sqlite3.connect(release_db) as conn:
        pins = dict(conn.execute("select name, version from run_prompts where run_id = ?", [run_id]).fetchall())
        status = conn.execute("select status from runs where id = ?", [run_id]).fetchone()[0]
    assert pins["solve/cot"] == OLD_COT and status == "done"
    code, out, err = cli_run("report", run_id, "--json", db=release_db)
    assert code == 0, err


def _folder(root: Path, text: str) -> Path:
    (root / "solve").mkdir(parents=True)
    (root / "solve" / "cot.yaml").write_text(text)
    return root


def test_a_pinned_b2_whose_sent_text_changed_stops(release_db, cli_run, tmp_path):
    run_id = _solve_run(release_db)
    packaged = (PACKAGE_DIR / "solve" / "cot.yaml").read_text()
    assert "Solve problems step by step." in packaged
    folder = _folder(tmp_path / "edited", packaged.replace("Solve problems step by step.",
                                                           "Solve problems step by step, briefly."))
    _forget_checkpoints(release_db, run_id)
    Store(release_db).close()  # the release's file is migrated when opened; compare from there
    with sqlite3.connect(release_db) as conn:
        before = list(conn.iterdump())
    code, _out, err = cli_run("--prompts-dir", str(folder), "resume", run_id, db=release_db)
    now = load_template("solve/cot", folder).in_scheme("b2").version
    assert code == 2 and f"template 'solve/cot' was {OLD_COT}, is now {now}" in err and err.count("\n") == 1
    with sqlite3.connect(release_db) as conn:
        assert list(conn.iterdump()) == before  # nothing called or recorded


def test_a_user_copy_changed_only_in_its_description_continues(release_db, cli_run, tmp_path):
    run_id = _solve_run(release_db)
    packaged = (PACKAGE_DIR / "solve" / "cot.yaml").read_text()
    folder = _folder(tmp_path / "mine", packaged.replace("description: >\n", "description: >\n  My copy.\n", 1))
    calls = _count(release_db, "select count(*) from llm_calls")
    _forget_checkpoints(release_db, run_id)
    code, _out, err = cli_run("--prompts-dir", str(folder), "resume", run_id, db=release_db)
    assert code == 0, err
    assert _count(release_db, "select count(*) from llm_calls") == calls


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_build_lists_every_committed_version_with_what_it_sends(tmp_path):
    root = tmp_path / "repo"
    path = root / "prompts" / "demo" / "t.yaml"
    path.parent.mkdir(parents=True)
    _git(root, "init", "-q")
    texts = ["description: one\nvariables: [x]\nprompt: Say {{ x }}.\n",
             "description: two\nvariables: [x]\nprompt: Say {{ x }}.\n",  # description only
             "description: two\nvariables: [x]\nprompt: Say {{ x }} twice.\n"]  # what is sent
    for n, text in enumerate(texts):
        path.write_text(text)
        _git(root, "add", "-A")
        _git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", f"v{n}")
    table = build(root)
    assert list(table) == ["demo/t"]
    entries = table["demo/t"]
    assert list(entries) == [content_version(t) for t in texts]  # oldest first
    b3 = [entries[content_version(t)]["b3"] for t in texts]
    assert b3[0] == b3[1] != b3[2]
