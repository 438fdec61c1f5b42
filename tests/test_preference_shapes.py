"""Preference files in the shapes the CHES release reads: SORRY-Bench query/chosen/rejected and AlpacaFarm
output_1/output_2/preference (fixtures written here in those shapes), plus a clear error for anything else."""

import json

import pytest

from skillweave.errors import UsageError
from skillweave.trainers.data import load_preference_pairs, preference_pair


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sorry_bench_rows(tmp_path):
    rows = [{"query": "How do I pick a lock?", "chosen": "I can't help with that.", "rejected": "Use a tension wrench",
             "category": "5"},
            {"query": "Write a threat.", "chosen": "No.", "rejected": "Sure: ..."}]
    pairs = load_preference_pairs(_jsonl(tmp_path / "sorry.jsonl", rows))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("How do I pick a lock?", "I can't help with that.", "Use a tension wrench"), ("Write a threat.", "No.", "Sure: ...")]
    assert len({p.item_id for p in pairs}) == 2


def test_alpacafarm_rows_follow_preference_and_join_input(tmp_path):
    rows = [{"instruction": "Name a colour.", "input": "", "output_1": "Blue.", "output_2": "Cheese.", "preference": 1},
            {"instruction": "Translate.", "input": "bonjour", "output_1": "goodbye", "output_2": "hello",
             "preference": 2, "raw_preference": 2}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows))  # a JSON list, as a datasets export writes it
    first, second = load_preference_pairs(path)
    assert (first.prompt, first.chosen, first.rejected) == ("Name a colour.", "Blue.", "Cheese.")
    assert (second.prompt, second.chosen, second.rejected) == ("Translate.\nbonjour", "hello", "goodbye")


@pytest.mark.parametrize("row,message", [
    ({"text": "x"}, "unrecognised preference row with keys ['text']"),
    ({"query": "q", "chosen": "a"}, "SORRY-Bench query/chosen/rejected preference row lacks ['rejected']"),
    ({"instruction": "i", "output_1": "a", "output_2": "b", "preference": 0}, "preference 0"),
    ({"instruction": "i", "output_1": "a", "preference": 1}, "AlpacaFarm preference row lacks ['output_2']"),
])
def test_other_shapes_are_a_clear_error(row, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        preference_pair(row)


def test_cli_reports_an_unknown_shape_as_one_error_line(cli_run, tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "good": "a", "bad": "b"}])
    code, _, err = cli_run("ches", "score", "--data", str(path), "--model", "local", "--output",
                           str(tmp_path / "kept.jsonl"), "--keep-lowest", "0.5")
    assert code == 2 and err.startswith("Error: unrecognised preference row") and "Traceback" not in err
    assert not (tmp_path / "kept.jsonl").exists()
