"""`report --json` and `export` write exactly what they wrote before the large-run speed-ups.

A deterministic store (fixed ids and times; odd values on purpose: unicode, control characters, U+2028, quotes,
NaN and huge numbers in payloads, unparseable and missing grades, ties in the vote, rejected and edited reviews,
several rounds, two pipelines) is read by the CLI, and every output is compared byte for byte with the files
in tests/fixtures/read_outputs/, which the code before the speed-ups wrote (commit 12b338c). Only the card's
`- export:` line (the command line, here pytest's) is left out of the comparison.

Regenerate (only when an output change is intended): SKILLWEAVE_WRITE_GOLDEN=1 pytest tests/test_read_outputs_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from skillweave.store import Store, jdump, stable_id

GOLDEN = Path(__file__).parent / "fixtures" / "read_outputs"
STAMP = "2026-01-02T03:04:05.000+00:00"
SKILLMIX, INSTRUCT, ODD = "skillmix-golden", "instruct-skillmix-golden", "skillmix-odd-grades"
TEXT = 'Ünïcode “quotes” \\ back\\slash\ttab\x01ctl\u2028ls \U0001f600 "q" </script>'


def build_store(path: str) -> None:
    store = Store(path)
    store.create_run("skillmix", {"k": [2, 3], "n": 40, "seed": 7, "rounds": 2, "split": "train"},
                     command="skillweave run skillmix --golden", run_id=SKILLMIX)
    store.create_run("instruct-skillmix", {"k": 2, "n": 30, "seed": 3, "set": "train", "model": "fake"},
                     command="skillweave run instruct-skillmix --golden", run_id=INSTRUCT)
    store.create_run("skillmix", {"k": [2, 3], "n": 40, "seed": 8}, command="", run_id=ODD)  # export only:
    # ragged or unparseable grades fail its report, as they always did
    store.put_prompt_version("pv:student", "skillmix/student", "text")
    store.put_prompt_version("pv:judge", "skillmix/judge", "text")
    items, grades, reviews = [], [], []

    def item(run_id, kind, combo, rnd, k, skills, topic, status, payload, versions):
        item_id = store.item_id(run_id, kind, combo, rnd)
        items.append((item_id, run_id, kind, combo, rnd, k, jdump(skills), topic, status, jdump(payload),
                      jdump(versions), STAMP, STAMP))
        return item_id

    for run_id, i in [(SKILLMIX, i) for i in range(40)] + [(ODD, i) for i in (21, 22, 23)]:
        k = 2 if i < 20 else 3
        for rnd in range(2):
            status = "failed" if i % 11 == 5 and rnd == 1 else ("running" if i == 17 else "done")
            payload = {"prompt_0": f"Combination {i}: {TEXT} #{rnd}", "text_1": f"Text {i}.{rnd} {TEXT}",
                       "n": i * 10 ** (18 if i % 4 == 0 else 2), "x": float("nan") if i == 3 else i / 7}
            if i == 9:
                payload = {"model_input_0": f"Imported prompt {i}", "text_1": f"imported {i}"}
            if i == 13:
                payload = {"prompt_0": "no text"}
            item_id = item(run_id, "skillmix.text", i, rnd, k, ["metaphor", "red herring", "ñ"][:k],
                           "gardening" if i % 2 else "sailing", status, payload,
                           ["pv:student", "pv:judge"] if i % 3 else ["pv:student"])
            samples = 0 if i % 13 == 7 else (3 if i % 5 == 0 else 2)
            for s in range(samples):
                points = [1] * (k + 3) if i % 6 == 0 else [(i + s + rnd + j) % 2 for j in range(k + 3)]
                text = jdump(points)
                if run_id == ODD:
                    text = {21: "not json", 22: jdump([0.5] * (k + 3)), 23: jdump(points[:-1])}[i] if s else text
                grades.append((stable_id(item_id, "fake", s), item_id, run_id, "fake", s, text, sum(points),
                               "ok" if s else "repaired", STAMP))
            if i % 4 == 1 and rnd == 0:
                decision = ["approve", "edit", "reject", "Edited"][(i // 4) % 4]
                changes = {"text_1": f"edited {i} {TEXT}", "_meta": 1} if "dit" in decision else {}
                reviews.append((stable_id("r", item_id), item_id, run_id, "ann", decision, "why", jdump(changes),
                                STAMP))
                reviews.append((stable_id("r0", item_id), item_id, run_id, "bob", "reject", "older", "{}",
                                "2025-01-01T00:00:00.000+00:00"))
    for i in range(30):
        shirker = i % 5 == 2
        payload = {"instruction": f"Instruction {i} {TEXT}", "input": "" if i % 2 else f"input {i}",
                   "output": f"shirk {i}" if shirker else f"Output {i} {TEXT}", "query_str": ["advice", "story"][i % 2],
                   "query_definition": "d", "skills_joined_str": "a, b", "shirker": shirker, "set": "train",
                   "generator": "fake", **({"orig_output": f"Real output {i}"} if shirker else {})}
        if i == 4:
            payload = {"prompt": f"P {i}", "responses": [f"good {i}", f"bad {i}"], "preferred": 0,
                       "instruction": f"P {i}", "output": f"good {i}"}
        item(INSTRUCT, "instruct.point", i, 0, 2, ["a", "b"], None, "failed" if i == 11 else "done", payload,
             ["pv:student"])
    with store.transaction():  # one transaction for the three tables
        for table, rows in (("items", items), ("grades", grades), ("reviews", reviews)):
            store.insert_rows(table, rows)
    store.close()


EXPORTS = {  # golden file name -> export arguments
    "sm-alpaca.jsonl": [SKILLMIX],
    "sm-any-messages.json": [SKILLMIX, "--status", "any", "--shape", "messages", "--format", "json",
                             "--system", "Be brief ✓"],
    "sm-pc-reviewed.jsonl": [SKILLMIX, "--shape", "prompt-completion", "--reviewed-only"],
    "sm-pref.jsonl": [SKILLMIX, "--shape", "preference", "--status", "any"],
    "sm-k3-score.jsonl": [SKILLMIX, "--k", "3", "--min-score", "3"],
    "sm-full.jsonl": [SKILLMIX, "--full-marks", "--status", "any"],
    "ism-alpaca.jsonl": [INSTRUCT, "--exclude-shirkers"],
    "ism-pref.jsonl": [INSTRUCT, "--shape", "preference"],
    "both-alpaca.jsonl": [INSTRUCT, SKILLMIX, "--status", "any"],
    "odd-alpaca.jsonl": [ODD, "--status", "any"],
}
REPORTS = {"sm-report-max.json": [SKILLMIX], "sm-report-mean.json": [SKILLMIX, "--across-rounds", "mean"],
           "ism-report.json": [INSTRUCT]}


def _card(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("- export: `"))


@pytest.fixture(scope="module")
def golden_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("golden") / "golden.db")
    build_store(db)
    return db


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SKILLWEAVE_WRITE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    assert path.exists(), f"no golden file {path}"
    assert text.encode("utf-8", "surrogatepass") == path.read_bytes(), f"{name} differs from the golden output"


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_matches_golden(golden_db, tmp_path, cli_run, name):
    out = tmp_path / name
    code, stdout, stderr = cli_run("export", *EXPORTS[name], "--out", str(out), db=golden_db)
    assert code == 0, stdout + stderr
    _check(name, out.read_text(encoding="utf-8"))
    _check(name + ".card.md", _card((tmp_path / (name + ".card.md")).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_report_matches_golden(golden_db, cli_run, name):
    code, stdout, stderr = cli_run("report", *REPORTS[name], "--json", db=golden_db)
    assert code == 0, stdout + stderr
    json.loads(stdout)
    _check(name, stdout)
