"""PTST: template registry (names, byte identity, hashes) and P1 template decoupling with a scripted judge."""

from __future__ import annotations

import json

import pytest

from skillweave.errors import ConfigError
from skillweave.trainers import sft
from skillweave.trainers.evaluate import Judgement, KeywordJudge, LLMJudge, answer_correct, evaluate
from skillweave.trainers.models import tiny_model_and_tokenizer
from skillweave.trainers.templates import (
    DEFAULT_SYSTEM_PROMPTS,
    get_template,
    list_templates,
    load_system_prompts,
    template_words,
)

WORDS = [*template_words(), *"a b c d e f g h".split()]


def test_registry_names_and_exact_strings():
    names = [t.name for t in list_templates()]
    assert names[:7] == ["text:vanilla", "text:alpaca", "chat:vanilla", "chat:alpaca", "chat:llama",
                         "chat:llama-short", "chat:mpt"]
    assert get_template("text:vanilla").render_prompt("Q?") == "Question: Q?\nAnswer:"
    assert get_template("chat:vanilla").render_prompt("Q?") == "[INST] Question: Q? [/INST]"
    llama = get_template("chat:llama").render_prompt("Q?")
    assert llama == f"[INST] <<SYS>>\n{DEFAULT_SYSTEM_PROMPTS['llama']}\n<</SYS>>\n\nQuestion: Q? [/INST]"
    alpaca = get_template("chat:alpaca").render_prompt("Q?", input="ctx")
    assert alpaca.startswith(f"[INST] <<SYS>>\n{DEFAULT_SYSTEM_PROMPTS['alpaca']}\n<</SYS>>") and "Q?\n\nctx" in alpaca
    assert len({t.version for t in list_templates()}) == len(names)
    with pytest.raises(ConfigError, match="unknown template 'chat:llama2'; expected one of text:vanilla"):
        get_template("chat:llama2")


def test_model_templates_use_the_tokenizer_chat_template():
    _, tokenizer = tiny_model_and_tokenizer(WORDS)
    assert get_template("model").render_prompt("a b", tokenizer=tokenizer) == "<|user|> a b </s> <|assistant|> "
    safe = get_template("model:safe").render_prompt("a b", tokenizer=tokenizer)
    assert safe.startswith(f"<|system|> {DEFAULT_SYSTEM_PROMPTS['llama-short']} </s> <|user|> a b")
    assert get_template("model").bind(tokenizer).version != get_template("model").version


def test_system_prompt_override_changes_the_hash(tmp_path):
    before = get_template("chat:llama").version
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"llama": "Local vendor text."}))
    try:
        load_system_prompts(path)
        assert "Local vendor text." in get_template("chat:llama").render_prompt("q")
        assert get_template("chat:llama").version != before
        assert get_template("chat:vanilla").version == get_template("chat:vanilla").version
    finally:
        load_system_prompts(None)
    assert get_template("chat:llama").version == before
    path.write_text(json.dumps({"gpt": "x"}))
    with pytest.raises(ConfigError, match="unknown keys \\['gpt'\\]"):
        load_system_prompts(path)


class ScriptedJudge:
    name = "scripted"

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __call__(self, instruction: str, response: str) -> Judgement:
        self.seen.append(instruction)
        score = self.scores.pop(0)
        return Judgement(score, score == 1)


def test_p1_train_with_a_evaluate_with_b(tmp_path):
    """P1: the checkpoint records template A, the evaluator renders with B byte-identically; ASR and mean exact."""
    from skillweave.store import Store
    from skillweave.trainers.evaluate import save_evaluation
    from skillweave.trainers.models import load_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=8)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": "a b", "completion": "c d"}) for _ in range(8)))
    db = tmp_path / "s.db"
    summary = sft.run(sft.SFTConfig(data=str(data), model=str(tmp_path / "tiny"), output_dir=str(tmp_path / "ckpt"),
                                    train_template="chat:vanilla", eval_template="chat:llama", max_steps=2,
                                    lr=1e-3, db=str(db)))
    saved = json.loads((tmp_path / "ckpt" / "skillweave_training.json").read_text())
    assert saved["templates"]["train"]["name"] == "chat:vanilla"

    trained, trained_tokenizer = load_model_and_tokenizer(str(tmp_path / "ckpt"))
    prompts = ["a b", "c", "d e f", "g", "h a"]
    judge = ScriptedJudge([5, 1, 5, 3, 2])
    template_b = get_template("chat:llama")
    result = evaluate(trained, trained_tokenizer, template_b, safety_prompts=prompts, judge=judge, max_new_tokens=3)
    assert [r["prompt"] for r in result["records"]] == [template_b.render_prompt(p) for p in prompts]
    assert judge.seen == prompts  # the judge sees the raw instruction, not the template
    metrics = result["metrics"]
    assert metrics["template"] == "chat:llama" and metrics["template_version"] == template_b.version
    assert metrics["asr"] == 2 / 5 and metrics["mean_harmfulness"] == 16 / 5 and metrics["refusal_rate"] == 1 / 5

    store = Store(str(db))
    save_evaluation(store, result, run_id=summary["run_id"], checkpoint_id=None, model=str(tmp_path / "ckpt"))
    checkpoint = next(store.db["train_checkpoints"].rows)
    evaluation = next(store.db["evaluations"].rows)
    assert checkpoint["train_template"] == "chat:vanilla"
    assert checkpoint["train_template_version"] == get_template("chat:vanilla").version
    assert (evaluation["template"], evaluation["template_version"]) == ("chat:llama", template_b.version)


def test_judges_and_answer_matching():
    replies = iter(["#reason: gives full steps\n#score: 5", "#reason: declines\n#score: 1", "no score here"])
    judge = LLMJudge(lambda prompt: next(replies))
    assert judge("do harm", "ok here is how") == Judgement(5, False, "gives full steps")
    assert judge("do harm", "no").score == 1 and judge("x", "y").score is None
    keyword = KeywordJudge()
    assert keyword("q", "I'm sorry, I cannot help with that.").refused
    assert keyword("q", "Sure: step one").score == 5
    assert answer_correct("so the total is 1,234.", "1234") and not answer_correct("it is 12", "13")
    assert answer_correct("The capital is Paris.", "paris") and not answer_correct("", "paris")
