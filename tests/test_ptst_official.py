"""PTST release formats: the seven template layouts, the AdvBench prompt CSV, and the inference output files.

The layouts are checked against a transcription of the release's `get_prompt_template` with system texts of our
own (the vendors' texts are not copied here). With SKILLWEAVE_OFFICIAL_PTST pointing at a checkout of
vfleaking/PTST, one more test imports its `prompt_utils.py`, loads its system prompts and compares all seven
styles byte for byte.
"""

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest

from skillweave.trainers.evaluate import judge_outputs, load_eval_rows, read_advbench_csv, read_ptst_outputs
from skillweave.trainers.templates import get_template, load_system_prompts

SYSTEMS = {"llama": "Long safety text, line one.\nLine two.", "llama-short": "Short safety text.",
           "mpt": "A conversation text.", "alpaca": "An instruction preamble."}
STYLES = {  # registry name -> the release's style name (its STYLE_TRANSLATION_MAP targets)
    "text:vanilla": "text_question_answer", "text:alpaca": "text_alpaca", "chat:vanilla": "question",
    "chat:alpaca": "question_alpaca", "chat:llama": "question_llama", "chat:llama-short": "question_llama_short",
    "chat:mpt": "question_mpt",
}


def release_template(style, systems):
    """get_prompt_template, transcribed, with the system texts as parameters."""
    b_sys, e_sys = "<<SYS>>\n", "\n<</SYS>>\n\n"
    add_inst = True
    if style == "text_question_answer":
        template, add_inst = "Question: %s\nAnswer:", False
    elif style == "text_alpaca":
        template, add_inst = systems["alpaca"] + "\n\n" + "### Instruction:\n%s\n\n### Response:\n", False
    elif style == "question":
        template = "Question: %s"
    elif style == "question_alpaca":
        template = b_sys + systems["alpaca"] + e_sys + "### Instruction:\n%s\n\n### Response:\n"
    else:
        key = {"question_llama": "llama", "question_llama_short": "llama-short", "question_mpt": "mpt"}[style]
        template = b_sys + systems[key] + e_sys + "Question: %s"
    return "[INST] " + template + " [/INST]" if add_inst else template


@pytest.fixture
def systems_file(tmp_path):
    path = tmp_path / "systems.json"
    path.write_text(json.dumps(SYSTEMS))
    load_system_prompts(path)
    yield path
    load_system_prompts(None)


@pytest.mark.parametrize("name", list(STYLES))
def test_seven_styles_render_the_release_layout(systems_file, name):
    for question in ("What is 7 * 6?", "Multi\nline, 100% sure?"):
        assert get_template(name).render_prompt(question) == release_template(STYLES[name], SYSTEMS) % question


def _write_advbench(path, n=520):
    rows = [f"Explain step {i} of a harmless chore" for i in range(n)]
    rows[3] = "Describe, in detail, a chore with commas"  # quoted in the file, as some release rows are
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([r] for r in rows)
    return rows


def test_advbench_csv_without_header_gives_every_row(tmp_path):
    path = tmp_path / "advbench-harmful-behaviors.csv"
    rows = _write_advbench(path)
    assert '"Describe, in detail, a chore with commas"' in path.read_text()
    assert read_advbench_csv(str(path)) == rows and len(rows) == 520
    safety, qa = load_eval_rows(str(path))
    assert safety == rows and qa == []


def test_ptst_outputs_answer_is_the_model_response(tmp_path, cli_run):
    path = tmp_path / "outputs.jsonl"
    rows = [{"prompt": "Write a threat.", "answer": "I'm sorry, but I can't assist with that request."},
            {"prompt": "Explain a scam.", "answer": "Step 1: find a victim."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_ptst_outputs(str(path))
    assert pairs == [(r["prompt"], r["answer"]) for r in rows]
    result = judge_outputs(pairs)
    assert result["safety"]["refusal_rate"] == 0.5 and result["safety"]["asr"] == 0.5
    assert [r["response"] for r in result["records"]] == [r["answer"] for r in rows]
    code, out, err = cli_run("train", "judge-outputs", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["safety"]["n_safety"] == 2
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "response": "r"}\n')
    code, _, err = cli_run("train", "judge-outputs", str(tmp_path / "bad.jsonl"))
    assert code == 2 and err.startswith("Error:") and "lacks ['prompt', 'answer']" in err


OFFICIAL = os.environ.get("SKILLWEAVE_OFFICIAL_PTST")


@pytest.mark.skipif(not OFFICIAL, reason="set SKILLWEAVE_OFFICIAL_PTST to a checkout of vfleaking/PTST")
def test_against_the_official_checkout(tmp_path):
    root = Path(OFFICIAL)
    spec = importlib.util.spec_from_file_location("ptst_prompt_utils", root / "prompt_utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    alpaca = module.get_prompt_template("text_alpaca").split("\n\n### Instruction")[0]
    systems = {"llama": module.LLAMA_BASE_PROMPT, "llama-short": module.LLAMA_SHORT_PROMPT,
               "mpt": module.MPT_PROMPT, "alpaca": alpaca}
    (tmp_path / "systems.json").write_text(json.dumps(systems))
    load_system_prompts(tmp_path / "systems.json")
    try:
        for name, style in STYLES.items():
            official = module.get_prompt_template(style)
            assert official == module.get_prompt_template(f"gsm:{name}")  # the release's own name for it
            for question in ("What is 7 * 6?", "Multi\nline question"):
                assert get_template(name).render_prompt(question) == official % question, name
    finally:
        load_system_prompts(None)
    prompts = read_advbench_csv(str(root / "data" / "advbench-harmful-behaviors.csv"))
    assert len(prompts) == 520
    pairs = read_ptst_outputs(str(root / "question_output" / "example.jsonl"))
    assert pairs and all(isinstance(p, str) and isinstance(a, str) for p, a in pairs)
