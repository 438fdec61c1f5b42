"""Bad input gets one `Error:` line on stderr, exit 2, no traceback, and leaves the store as it was.

Each case builds its bad input in a temporary folder, runs the CLI in-process through `skillweave.cli.main` (the
console entry point), and checks the exit code, that stderr is a single `Error:` line, and that the store's
content (an SQL dump, WAL included) is unchanged. docs/bad-input.md lists the same cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3

import pytest

from skillweave.store import Store

LATIN1 = "Caf\xe9 cr\xe8me, na\xefve\n".encode("latin-1")


@pytest.fixture(scope="module")
def _good_store(tmp_path_factory):
    """A store holding one finished fake Skill-Mix run (and an item waiting for nothing)."""
    from skillweave.cli import main

    folder = tmp_path_factory.mktemp("good")
    main(["--db", str(folder / "run.db"), "run", "skillmix", "--model", "fake", "--k", "1", "--n", "1", "--rounds",
          "1", "--grading-samples", "1"])
    source, copy = sqlite3.connect(folder / "run.db"), sqlite3.connect(folder / "good.db")
    source.backup(copy)  # one self-contained file, whatever the run's connection left in its WAL
    source.close()
    copy.close()
    assert Store(folder / "good.db").get_run("latest")["status"] == "done"
    return folder / "good.db"


def dump(path) -> str:
    if not os.path.exists(path):
        return "<absent>"
    conn = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def _write(path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _template(folder, body: str | bytes) -> str:
    _write(folder / "skillmix" / "student.yaml", body)
    return str(folder)


def _records(folder, data: bytes) -> str:
    _write(folder / "k1_s1_v1_r1" / "student-x" / "records.csv", data)
    return str(folder)


RUN = ["run", "skillmix", "--model", "fake", "--k", "1", "--n", "1", "--rounds", "1", "--grading-samples", "1"]
BIG_FIELD = "skill,category,definition\nmetaphor,literary," + "x" * 200_000 + "\n"

# name -> (function of tmp folder returning the argv after --db, or (argv, db override)); `None` db = the good store
CASES = {
    "skills file not UTF-8": lambda t: [*RUN, "--skills", _write(t / "skills.txt", LATIN1)],
    "topics file not UTF-8": lambda t: [*RUN, "--topics", _write(t / "topics.txt", LATIN1)],
    "dataset not UTF-8": lambda t: ["run", "extract-skills", "--model", "fake", "--reviewer", "auto", "--dataset",
                                    _write(t / "q.jsonl", b'{"question": "' + LATIN1.strip() + b'"}\n')],
    "dataset CSV not UTF-8": lambda t: ["run", "extract-skills", "--model", "fake", "--reviewer", "auto",
                                        "--dataset", _write(t / "q.csv", b"question,answer\n" + LATIN1)],
    "review import not UTF-8": lambda t: ["review", "import", _write(t / "d.jsonl", LATIN1)],
    "review import not objects": lambda t: ["review", "import", _write(t / "d.jsonl", "[1, 2]\n")],
    "template not UTF-8": lambda t: ["--prompts-dir", _template(t / "p", b"prompt: " + LATIN1), *RUN],
    "template turns: 5": lambda t: ["--prompts-dir", _template(t / "p", "turns: 5\n"), *RUN],
    "imported records.csv not UTF-8": lambda t: ["import", "skillmix", _records(t / "sm", b"prompt\n" + LATIN1)],
    "skills CSV field over 128 KB": lambda t: [*RUN, "--skills", _write(t / "skills.csv", BIG_FIELD)],
    "NUL byte in a skills CSV": lambda t: [*RUN, "--skills", _write(t / "skills.csv",
                                                                    "skill,category\nmeta\x00phor,literary\n")],
    "skills JSON object": lambda t: [*RUN, "--skills", _write(t / "skills.json", '{"a": 1}')],
    "skills JSON list of numbers": lambda t: [*RUN, "--skills", _write(t / "skills.json", "[1, 2]")],
    "50 MB topic line": lambda t: [*RUN, "--topics", _write(t / "topics.txt", b"x" * 50_000_000 + b"\n")],
    "--n 0": lambda t: [*RUN[:6], "--n", "0"],
    "--max-tokens -5": lambda t: [*RUN, "--max-tokens", "-5"],
    "math2 --max-tokens -5": lambda t: ["run", "math2", "--model", "fake", "--max-tokens", "-5"],
    "logs -n -5": lambda t: ["logs", "-n", "-5"],
    "--k 1..20000000": lambda t: [*RUN[:4], "--k", "1..20000000"],
    "--n -1 --k 8": lambda t: [*RUN[:4], "--n", "-1", "--k", "8"],
    "review serve short token": lambda t: ["review", "serve", "--token", "abc"],
    "review serve port 99999": lambda t: ["review", "serve", "--port", "99999"],
    "export --out the store": lambda t: ["export", "latest", "--shape", "prompt-completion", "--overwrite",
                                         "--out", "@STORE"],
    "review export over the store": lambda t: ["review", "export", "@STORE"],
    "skills export over the store": lambda t: ["skills", "export", "bundled", "@STORE", "--format", "skills-txt"],
    "export --out . --overwrite": lambda t: ["export", "latest", "--format", "hf", "--overwrite", "--out",
                                             str(t.parent)],  # the folder holding the store
}


def _files(folder) -> list[str]:
    """Files in a folder, less SQLite's -wal/-shm companions of an open store."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_error_line_exit_2_store_unchanged(name, _good_store, tmp_path, cli_run):
    db = tmp_path / "store.db"
    shutil.copy(_good_store, db)
    args = [str(db) if a == "@STORE" else a for a in CASES[name](tmp_path / "in")]
    before = dump(db)
    files_before = _files(tmp_path)
    code, out, err = cli_run(*args, db=str(db))
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err + out
    assert dump(db) == before
    assert _files(tmp_path) == files_before


STORE_FILES = {
    "not a database": lambda p: p.write_bytes(b"this is a text file, not SQLite\n" * 100),
    "random bytes": lambda p: p.write_bytes(os.urandom(8192)),
    "truncated store": None,  # filled in by the test from the good store
    "SQLite without a migration table": lambda p: _other_db(p),
}


def _other_db(path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("create table runs (x)")
    conn.execute("insert into runs values (1)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("name", list(STORE_FILES))
@pytest.mark.parametrize("command", [["runs", "list"], RUN])
def test_bad_store_file_is_refused_and_left_alone(name, command, _good_store, tmp_path, cli_run):
    db = tmp_path / "bad.db"
    if STORE_FILES[name] is None:
        data = _good_store.read_bytes()
        db.write_bytes(data[: len(data) // 3])
    else:
        STORE_FILES[name](db)
    before = db.read_bytes()
    code, out, err = cli_run(*command, db=str(db))
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


@pytest.mark.parametrize("where", ["a folder", "missing parent folder"])
def test_store_path_that_cannot_be_a_file(where, tmp_path, cli_run):
    db = tmp_path if where == "a folder" else tmp_path / "no" / "such" / "x.db"
    code, _, err = cli_run("runs", "list", db=str(db))
    assert code == 2 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write read-only files and folders")
@pytest.mark.parametrize("what", ["read-only store file", "read-only folder"])
def test_read_only_store_or_folder(what, _good_store, tmp_path, cli_run):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "s.db"
    shutil.copy(_good_store, db)
    (db if what == "read-only store file" else folder).chmod(0o555 if what == "read-only folder" else 0o444)
    try:
        code, _, err = cli_run(*RUN, db=str(db))
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert code == 2 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err


READ_ONLY = [["runs", "list"], ["runs", "show", "latest"], ["report", "latest"], ["logs"], ["items", "list", "latest"],
             ["items", "lineage", "abcdef"], ["review", "list"], ["skills", "list"],
             ["export", "latest", "--out", "OUT"]]


@pytest.mark.parametrize("command", READ_ONLY, ids=[" ".join(c[:2]) for c in READ_ONLY])
def test_read_only_commands_create_no_store_at_a_mistyped_path(command, tmp_path, cli_run):
    db = tmp_path / "mistyped.db"
    args = [str(tmp_path / "out.jsonl") if a == "OUT" else a for a in command]
    code, _, err = cli_run(*args, db=str(db))
    assert code == 2 and err.startswith("Error: no store at"), err
    assert list(tmp_path.iterdir()) == []


def test_prompts_list_names_a_broken_file_and_lists_the_rest(tmp_path, cli_run):
    folder = tmp_path / "p"
    _write(folder / "skillmix" / "student.yaml", "prompt: [unclosed\n")
    _write(folder / "skillmix" / "judge.yaml", b"prompt: " + LATIN1)
    code, out, err = cli_run("--prompts-dir", str(folder), "prompts", "list", "--json", db=str(tmp_path / "x.db"))
    assert code == 1
    names = [row["name"] for row in json.loads(out)]
    assert "skillmix/student" not in names and "skillmix/judge" not in names
    assert "math2/qgen" in names or len(names) > 10
    assert "student.yaml" in err and "judge.yaml" in err and "Traceback" not in err
    assert all(line.startswith("Error: ") for line in err.strip().splitlines())


def test_store_opening_refusals_keep_their_store_error_type(tmp_path):
    from skillweave.errors import StoreError

    (tmp_path / "d.db").mkdir()
    with pytest.raises(StoreError):
        Store(tmp_path / "d.db")


@pytest.mark.parametrize("what", ["read-only store file", "read-only folder", "read-only folder, new store"])
def test_read_only_store_or_folder_as_seen_by_a_normal_user(what, _good_store, tmp_path, cli_run, monkeypatch):
    """The permission check as a non-root user sees it (os.access answers for the real uid; root passes it)."""
    import skillweave.store as store_module

    db = tmp_path / ("new.db" if "new" in what else "s.db")
    if "new" not in what:
        shutil.copy(_good_store, db)
    denied = db if what == "read-only store file" else tmp_path
    real = os.access
    monkeypatch.setattr(store_module.os, "access",
                        lambda p, mode: False if (os.path.realpath(p) == str(denied.resolve()) and mode & os.W_OK)
                        else real(p, mode))
    before = dump(db)
    code, _, err = cli_run(*RUN, db=str(db))
    assert code == 2 and err.startswith("Error: ") and "read" in err and len(err.strip().splitlines()) == 1, err
    assert dump(db) == before
