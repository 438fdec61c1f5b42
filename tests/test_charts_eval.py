"""`run chart-eval` end to end on synthetic and official-layout folders, with scripted models and judges."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from click.testing import CliRunner

from skillweave.charts.charxiv import load_release
from skillweave.charts.synthetic import generate_synthetic_set
from skillweave.cli import cli, main
from skillweave.prompts import load_template
from skillweave.providers.core import FakeProvider, clear_providers, message_text, register_provider
from skillweave.store import Store

CONCURRENCY = 4


@pytest.fixture(autouse=True)
def _providers():
    clear_providers()
    yield
    clear_providers()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("charts") / "syn"
    generate_synthetic_set(folder, n=6, seed=5)
    return folder


def invoke(db, *args):
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def run_eval(db, data, *extra):
    invoke(db, "run", "chart-eval", "--data", str(data), "--concurrency", str(CONCURRENCY), *extra)
    store = Store(db)
    return store, store.list_runs(limit=1)[0]["id"]


def report(db, run_id):
    return json.loads(invoke(db, "charts", "report", run_id, "--json").output)


def test_fake_model_and_judge_end_to_end_on_a_synthetic_set(tmp_path, synthetic):
    db = tmp_path / "t.db"
    store, run_id = run_eval(db, synthetic, "--model", "fake", "--judge", "fake")
    questions = load_release(synthetic).questions()
    items = list(store.items(run_id))
    assert len(items) == len(questions) and all(i["status"] == "done" for i in items)
    for item in items:
        judges = {g["judge"] for g in store.grades(item["id"])}
        assert judges == {"fake", "programmatic"}, item["payload"]["question"]["key"]
    rep = report(db, run_id)
    d = rep["stats"]["judge"]["descriptive"]
    # the fake model answers 'Not Applicable' to everything: exactly the NA questions are right
    n_na = sum(q.answer == "Not Applicable" for q in questions if q.mode == "descriptive")
    assert d["N_valid"] == 24 and d["Overall Score"] == pytest.approx(100 * n_na / 24, abs=0.01)
    assert rep["agreement"]["descriptive"]["rate"] == 1.0
    assert set(rep["stats"]["judge"]["reasoning"]["By Source"]) == {"Synthetic (exact)"}
    # descriptive judge calls are batched per template: one call per (template, batch of <= 5)
    calls = list(store.db["llm_calls"].rows_where("run_id = ? and role = 'judge'", [run_id]))
    per_template = {}
    for q in questions:
        if q.mode == "descriptive":
            per_template[q.qid] = per_template.get(q.qid, 0) + 1
    expected = sum(-(-n // 5) for n in per_template.values()) + sum(q.mode == "reasoning" for q in questions)
    assert len(calls) == expected
    # the image went inline (redacted in the stored request), and the generic report command works too
    ask = next(store.db["llm_calls"].rows_where("run_id = ? and role = 'model'", [run_id], limit=1))
    assert '"type": "image"' in ask["request"] and '"mime": "image/jpeg"' in ask["request"]
    assert "descriptive" in invoke(db, "report", run_id).output
    invoke(db, "charts", "report", run_id, "--plot", str(tmp_path / "acc.png"))
    assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"
    exported = invoke(db, "charts", "export", run_id, "--out", str(tmp_path / "results")).output.split()
    assert sorted(p.rsplit("/", 1)[1] for p in exported) == sorted(
        f"{prefix}-fake-{mode}_val.json" for prefix in ("gen", "scores", "stats") for mode in ("descriptive", "reasoning"))


def _oracle(folder):
    """A scripted multimodal model that reads the gold answer of (image, question) and gives it."""
    gold = {}
    for q in load_release(folder).questions():
        with open(q.image_path, "rb") as fh:
            digest = hashlib.sha1(base64.b64encode(fh.read())).hexdigest()
        gold[(digest, q.question)] = q.answer

    def script(request):
        content = request.messages[-1]["content"]
        image = next(p for p in content if p.get("type") == "image")
        text = message_text(request.messages[-1])
        question = text.split("Question: ", 1)[1].split("\n", 1)[0]
        return f"Reading the chart.\nFinal answer: {gold[(hashlib.sha1(image['data'].encode()).hexdigest(), question)]}"

    return script


def _judge_turn(request) -> str:
    """The text of the judge template's turn (the first user message), also in a repair turn's request."""
    return message_text(next(m for m in request.messages if m["role"] == "user"))


def test_oracle_scores_100_and_a_broken_judge_scores_minus_one(tmp_path, synthetic):
    register_provider("fake:oracle", FakeProvider("oracle", script=_oracle(synthetic)), max_concurrency=CONCURRENCY)
    judge_calls = []

    def judge_script(request):
        judge_calls.append(request)
        text = _judge_turn(request)  # a repair turn gets the same answer as the turn it repairs
        if "What is the title of the plot?" in text:
            return "I would rather not grade titles."  # never parses: the batch scores -1
        if "Question: " in text and "Ground Truth: " in text:
            return '{"extracted_answer": "cut off mid'  # truncated: budgets 256 -> 512 -> 1024, then -1
        return request.meta["fake_reply"]

    register_provider("fake:judge", FakeProvider("judge", script=judge_script), max_concurrency=CONCURRENCY)
    db = tmp_path / "t.db"
    store, run_id = run_eval(db, synthetic, "--model", "fake:oracle", "--judge", "fake:judge", "--judge-retries", "4")
    rep = report(db, run_id)
    prog, judge = rep["stats"]["programmatic"], rep["stats"]["judge"]
    assert prog["descriptive"]["Overall Score"] == 100.0 and prog["reasoning"]["Overall Score"] == 100.0
    questions = load_release(synthetic).questions()
    n_titles = sum(q.qid == 1 for q in questions)
    n_reasoning = sum(q.mode == "reasoning" for q in questions)
    d = judge["descriptive"]
    assert d["N_invalid"] == n_titles and d["N_valid"] == 24
    assert d["Overall Score"] == pytest.approx(100 * (24 - n_titles) / 24, abs=0.01)
    assert judge["reasoning"]["N_invalid"] == n_reasoning and judge["reasoning"]["Overall Score"] == 0.0
    budgets = sorted(r.max_tokens for r in judge_calls if "Ground Truth: " in _judge_turn(r)
                     and "Response 1:" not in _judge_turn(r))
    assert budgets == sorted([256, 512, 1024] * n_reasoning)  # a truncated reply gets no repair turn
    title_batches = -(-n_titles // 5)
    # each of the 4 tries on an unparseable reply is a call and one repair turn that quotes the error
    title_calls = [r for r in judge_calls if "What is the title of the plot?" in _judge_turn(r)]
    assert len(title_calls) == 2 * 4 * title_batches
    repairs = [r for r in title_calls if r.messages[-1]["role"] == "user" and len(r.messages) > 2]
    assert len(repairs) == 4 * title_batches
    assert all("holds no JSON object" in message_text(r.messages[-1]) for r in repairs)
    assert all(r.options["json_schema"]["name"].startswith("DescriptiveJudgeReply") for r in title_calls)
    invalid = [g for g in store.db["grades"].rows_where("run_id = ? and parse_status = 'invalid'", [run_id])]
    assert len(invalid) == n_titles + n_reasoning and all(g["score"] == -1 for g in invalid)
    # resuming a finished run makes no new model calls
    before = store.db["llm_calls"].count
    invoke(db, "resume", run_id)
    assert store.db["llm_calls"].count == before


def test_programmatic_grading_skips_the_judge_on_exact_questions(tmp_path, synthetic):
    register_provider("fake:oracle", FakeProvider("oracle", script=_oracle(synthetic)), max_concurrency=CONCURRENCY)
    db = tmp_path / "t.db"
    store, run_id = run_eval(db, synthetic, "--model", "fake:oracle", "--judge", "fake", "--grading", "programmatic")
    assert store.db["llm_calls"].count_where("run_id = ? and role = 'judge'", [run_id]) == 0
    rep = report(db, run_id)
    assert rep["stats"]["judge"]["descriptive"]["Overall Score"] == 100.0


def _official(tmp_path):
    root = tmp_path / "CharXiv"
    (root / "data").mkdir(parents=True)
    (root / "images").mkdir()
    meta, desc, reas = {}, {}, {}
    for fid, subject in ((0, "cs"), (4, "math")):
        (root / "images" / f"{fid}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
        meta[str(fid)] = {"category": subject, "year": "21", "figure_path": f"p/{fid}.jpg", "caption": "c",
                          "paper_id": str(fid), "title": "t"}
        desc[str(fid)] = {"figure_id": fid, "num_subplots": 5, "subplot_loc": "the bottom right subplot",
                          "qids": [10, 16, 19, 1], "answers": None}
        reas[str(fid)] = {"figure_id": fid, "query": "How many bars exceed 5?", "answer": None, "inst_category": 4,
                          "qa_source": 2}
    for name, value in (("image_metadata", meta), ("descriptive", desc), ("reasoning", reas)):
        (root / "data" / f"{name}_test.json").write_text(json.dumps(value))
    return root


def test_official_layout_test_split_runs_and_reports_ungraded(tmp_path):
    db = tmp_path / "t.db"
    store, run_id = run_eval(db, _official(tmp_path), "--model", "fake", "--judge", "fake")
    assert store.get_run(run_id)["config"]["split"] == "test"
    assert store.db["llm_calls"].count_where("run_id = ? and role = 'model'", [run_id]) == 10
    assert store.db["llm_calls"].count_where("run_id = ? and role = 'judge'", [run_id]) == 0
    rep = report(db, run_id)
    assert rep["stats"]["judge"]["descriptive"]["N_ungraded"] == 8
    assert rep["stats"]["judge"]["reasoning"]["N_ungraded"] == 2
    asked = [c["request"] for c in store.db["llm_calls"].rows_where("run_id = ? and role = 'model'", [run_id])]
    # the string subplot_loc locates Q10, Q16 and Q1 of both charts; Q19 is asked without a locator
    assert sum("For the bottom right subplot, " in r for r in asked) == 6


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--db", str(tmp_path / "t.db"), "run", "chart-eval", "--data", str(tmp_path / "missing"),
              "--model", "fake"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: chart data folder") and "charts synth" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["--db", str(tmp_path / "t.db"), "run", "chart-eval", "--data", str(tmp_path), "--model", "gtp-4o"])
    assert exc.value.code == 2 and "unknown model spec 'gtp-4o'" in capsys.readouterr().err


def test_judge_template_has_a_distinct_rubric_per_family():
    template = load_template("chart_eval/judge_descriptive")
    pair = {"response": "r", "answer": "a", "extracted": "r"}
    texts = {rubric: template.render_turn(0, {"n": 1, "question": "q", "rubric": rubric, "pairs": [pair]})
             for rubric in ("title", "ocr", "quant", "bool", "enum", "trend", "layout")}
    assert len(set(texts.values())) == 7
    assert all('"extract_answer_T1", "score_T1"' in t for t in texts.values())


def test_synth_and_questions_commands(tmp_path):
    db = tmp_path / "t.db"
    out = json.loads(invoke(db, "charts", "synth", "--out", str(tmp_path / "s"), "--n", "3", "--json").output)
    assert out["charts"] == 3 and (tmp_path / "s" / "descriptive_val.json").exists()
    rows = json.loads(invoke(db, "charts", "questions", str(tmp_path / "s"), "--summary", "--json").output)
    assert sum(r["count"] for r in rows if r["mode"] == "descriptive") == 12
    export = invoke(db, "charts", "questions", str(tmp_path / "s")).output
    assert "For the" in export


def test_failing_model_and_failing_judge_are_counted_not_dropped(tmp_path, synthetic):
    n_questions = len(load_release(synthetic).questions())
    db = tmp_path / "t.db"
    store, run_id = run_eval(db, synthetic, "--model", "fake", "--judge", "fake:fail", "--judge-retries", "2",
                             "--mode", "descriptive", "--limit", "2")
    d = report(db, run_id)["stats"]["judge"]["descriptive"]
    assert (d["N_valid"], d["N_invalid"], d["Overall Score"]) == (8, 8, 0.0)
    failed_calls = store.db["llm_calls"].count_where("run_id = ? and role = 'judge' and error is not null", [run_id])
    batches = len({q.qid for q in load_release(synthetic).questions() if q.mode == "descriptive"
                   and q.figure_id in ("0", "1")})
    assert failed_calls == 2 * batches  # every batch tried judge_retries times
    result = CliRunner().invoke(cli, ["--db", str(db), "run", "chart-eval", "--data", str(synthetic), "--model",
                                      "fake:fail", "--judge", "fake", "--concurrency", str(CONCURRENCY)])
    assert result.exit_code == 3, result.output  # every ask failed: the items failed, and the exit status says so
    store, run_id = Store(db), Store(db).list_runs(limit=1)[0]["id"]
    assert store.db["items"].count_where("run_id = ? and status = 'failed' and error is not null", [run_id]) \
        == n_questions
    rep = report(db, run_id)
    assert rep["stats"]["judge"]["descriptive"]["N_valid"] + rep["stats"]["judge"]["reasoning"]["N_valid"] == n_questions
    assert rep["stats"]["judge"]["descriptive"]["Overall Score"] == 0.0
    assert store.db["events"].count_where("run_id = ? and stage = 'ask' and status = 'failed'", [run_id]) == n_questions


def test_an_interrupted_run_resumes_without_asking_twice(tmp_path, synthetic):
    calls = {"n": 0}

    def judge_then_interrupt(request):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of grading
        return request.meta["fake_reply"]

    register_provider("fake:judge", FakeProvider("judge", script=judge_then_interrupt), max_concurrency=2)
    db = tmp_path / "t.db"
    CliRunner().invoke(cli, ["--db", str(db), "run", "chart-eval", "--data", str(synthetic), "--model", "fake",
                             "--judge", "fake:judge", "--concurrency", "2"])
    store = Store(db)
    run = store.list_runs(limit=1)[0]
    n_items = store.db["items"].count
    assert run["status"] == "interrupted"
    assert 0 < sum(i["status"] == "done" for i in store.items(run["id"])) < n_items
    invoke(db, "resume", run["id"])
    assert all(i["status"] == "done" for i in store.items(run["id"]))
    asked = store.db.execute("select count(*), count(distinct item_id) from llm_calls where role = 'model'").fetchone()
    assert asked == (n_items, n_items)  # every question asked exactly once across both processes
