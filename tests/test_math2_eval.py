"""MATH² parsing, templates, evaluation with an LLM judge, and the square-law fit and plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_math2 import _fresh_providers, make_store, script, start  # noqa: F401  (autouse: fresh providers)

from skillweave.agents.math2 import (
    DEFAULT_CRITERIA,
    TEMPLATES,
    answers_match,
    extract_boxed,
    extract_question,
    normalize_answer,
    parse_verdicts,
)
from skillweave.agents.math2_eval import parse_judge
from skillweave.cli import cli
from skillweave.metrics.math2 import plot_square_law, square_law
from skillweave.prompts import load_template


def test_question_and_answer_extraction():
    assert extract_question("Plan: combine.\nQuestion: What is 2+2?\nSolution: 4") == "What is 2+2?"
    assert extract_question("**Question:** Find x.\n\nAnswer: 3") == "Find x."
    assert extract_question("no marker here") is None and extract_question("Question:   ") is None
    assert extract_boxed("so \\boxed{\\frac{3}{4}} and finally \\boxed{x^{2}+1}") == "x^{2}+1"
    assert extract_boxed("The answer is 384.") == "384" and extract_boxed("Final answer: $7$") == "7"
    assert extract_boxed("nothing") is None
    assert normalize_answer("\\dfrac{6}{8}") == "3/4" == normalize_answer("0.75")
    assert normalize_answer("$x = 12$") == "12" and normalize_answer("1,000") == "1000"
    assert answers_match("\\frac{1}{2}", "0.5") and not answers_match("2", "3") and not answers_match(None, None)
    assert not answers_match("(1, 2)", "12") and answers_match("(1,2)", "(1, 2)")
    assert normalize_answer("\\frac{-3}{6}") == "-1/2" and normalize_answer("x^{2}+1") == "x^{2}+1"


def test_verdict_parsing_is_per_criterion():
    text = "1. PASS - one answer\n2) FAIL: approximate\n3. **PASS** fine\nVerdict: FAIL"
    verdicts, overall = parse_verdicts(text, ["a", "b", "c", "d"])
    assert [v["verdict"] for v in verdicts] == ["PASS", "FAIL", "PASS", "missing"]
    assert verdicts[1]["reason"] == "approximate" and overall == "FAIL"
    assert parse_verdicts("looks good", ["a"]) == ([{"criterion": "a", "verdict": "missing", "reason": ""}], None)


VALUES = {  # what the nodes pass to each template
    "pair_check": {"skills": [{"name": "a", "definition": "d"}, {"name": "b", "definition": ""}]},
    "qgen": {"skills": [{"name": "a", "definition": "d", "exemplars": [{"question": "q", "answer": "s"}]},
                        {"name": "b", "definition": "", "exemplars": []}]},
    "attempt": {"question": "q"},
    "validate": {"question": "q", "skills": [{"name": "a"}, {"name": "b"}], "attempt": "t", "criteria": DEFAULT_CRITERIA},
    "refine": {"question": "q", "skills": [{"name": "a"}, {"name": "b"}], "attempt": "t", "failures": ["x"]},
    "solve": {"question": "q"},
    "review": {"question": "q", "skills": [{"name": "a"}, {"name": "b"}], "solution": "s", "answer": "1", "verdicts": "v"},
    "judge": {"question": "q", "reference": "r", "student": "s"},
}


@pytest.mark.parametrize("name", [*TEMPLATES, "judge"])
def test_every_template_renders_with_what_its_node_supplies(name):
    template = load_template(f"math2/{name}")
    rendered = template.render_all(VALUES[name])
    assert rendered["turns"][0] and template.version.startswith("b3:")
    assert template.render_fake_reply(0, VALUES[name])


def test_judge_parsing():
    assert parse_judge("Explanation: fine.\nCorrect: Yes") is True
    assert parse_judge("Explanation: step 2 is wrong even though 42 matches.\n**Correct:** No") is False
    assert parse_judge("I think so") is None


def test_square_law_fit_residuals_and_loglog():
    points = [{"model": f"m{i}", "x": x, "y": x ** 2} for i, x in enumerate([0.3, 0.5, 0.7, 0.9])]
    fit = square_law(points)["fit"]
    assert fit["scale_c"] == pytest.approx(1.0) and fit["loglog_b"] == pytest.approx(2.0)
    assert fit["loglog_a"] == pytest.approx(1.0) and fit["rmse_square_law"] == pytest.approx(0.0, abs=1e-12)
    # the paper's two named extremes: relative drop (X - Y) / X
    result = square_law([{"model": "o1-like", "x": 0.8, "y": 0.8 * (1 - 0.1089)},
                         {"model": "weak", "x": 0.3, "y": 0.3 * (1 - 0.9733)}])
    drops = {p["model"]: p["relative_drop"] for p in result["points"]}
    assert drops["o1-like"] == pytest.approx(0.1089) and drops["weak"] == pytest.approx(0.9733)
    above = {p["model"]: p["position"] for p in result["points"]}
    assert above == {"o1-like": "above", "weak": "below"}
    assert result["points"][0]["residual"] == pytest.approx(0.8 * 0.8911 - 0.64)
    xs, ys = np.array([0.8, 0.3]), np.array([0.8 * 0.8911, 0.3 * 0.0267])
    assert result["fit"]["scale_c"] == pytest.approx(float((ys * xs**2).sum() / (xs**4).sum()))


def test_square_law_plot_is_a_png_with_marks(tmp_path):
    path = tmp_path / "square.png"
    plot_square_law(square_law([{"model": "a", "x": 0.8, "y": 0.6, "n_x": 50, "n_y": 50},
                                {"model": "b", "x": 0.4, "y": 0.1}]), str(path))
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 300 and (image < 128).mean() > 0.01


def test_eval_grades_with_the_judge_and_reports_the_square_law(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, _ = start(store, bank, n=2)

    def judge(request):  # wrong steps: "right answer, wrong steps" must be graded incorrect
        student = request.messages[-1]["content"].split("Student's solution:")[1]
        return "Explanation: step 1 is wrong.\nCorrect: No" if "guess" in student else "Explanation: ok\nCorrect: Yes"

    script("fake:weak", {"solve": "I guess. \\boxed{42}"})
    script("fake:judge", {"judge": judge})
    result = CliRunner().invoke(cli, ["--db", store.path, "eval", "math2", "--source", run_id, "--model", "fake",
                                      "--model", "fake:weak", "--judge", "fake:judge", "--x-limit", "3",
                                      "--plot", str(tmp_path / "eval.png"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    acc = {r["model"]: r for r in report["accuracies"]}
    assert acc["fake"]["n_x"] == 3 and acc["fake"]["n_y"] == 2
    assert acc["fake"]["y"] == 1.0 and acc["fake:weak"]["y"] == 0.0
    assert acc["fake:weak"]["y_answer_match"] == 1.0  # the answer matched, the judge still said no
    # the bundled source questions have other answers than 42: the answer-match check sees that
    assert acc["fake"]["x_answer_match"] < 1.0 and acc["fake"]["x"] == 1.0
    points = {p["model"]: p for p in report["square_law"]["points"]}
    assert points["fake:weak"]["residual"] == pytest.approx(0.0 - 0.0) and points["fake"]["residual"] == 0.0
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert store.db["grades"].count == 2 * 5
    # re-running the same evaluation calls nothing new
    before = store.db["llm_calls"].count
    again = CliRunner().invoke(cli, ["--db", store.path, "eval", "math2", "--resume", report["run_id"]])
    assert again.exit_code == 0 and store.db["llm_calls"].count == before


def test_square_law_command_reads_a_csv(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text("model,x,y\nA,90,80\nB,50,20\nC,30,5\n")
    result = CliRunner().invoke(cli, ["eval", "square-law", str(csv), "--json", "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    by = {p["model"]: p for p in out["points"]}
    assert by["A"]["residual"] == pytest.approx(0.8 - 0.81) and by["B"]["relative_drop"] == pytest.approx(0.6)
    b = np.polyfit(np.log([0.9, 0.5, 0.3]), np.log([0.8, 0.2, 0.05]), 1)[0]
    assert out["fit"]["loglog_b"] == pytest.approx(b) and math.isfinite(out["fit"]["r2_square_law"])
