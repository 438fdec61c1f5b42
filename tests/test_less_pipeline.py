"""The LESS pipeline end to end through `skillweave select ...` on a tiny model, plus the baselines and errors."""

from __future__ import annotations

import json
import random

import click
import pytest

from skillweave.cli import main
from skillweave.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task_rows(n_per_task: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_per_task * 3):
        task = ("add", "rev", "noise")[i % 3]
        if task == "add":
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            row = {"prompt": f"add {' '.join(str(a))} plus {' '.join(str(b))}", "completion": " ".join(str(a + b))}
        elif task == "rev":
            w = [rng.choice("abcdefghij") for _ in range(rng.randint(6, 12))]
            row = {"prompt": "reverse " + " ".join(w), "completion": " ".join(reversed(w))}
        else:
            v = [f"w{k}" for k in range(30)]
            row = {"prompt": "say " + " ".join(rng.choice(v) for _ in range(4)),
                   "completion": " ".join(rng.choice(v) for _ in range(rng.randint(12, 24)))}
        rows.append({**row, "item_id": f"{task}-{i}", "task": task})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def files(tmp_path):
    pool = _task_rows(15)
    targets = [{**r, "subtask": s} for r, s in zip(
        [r for r in _task_rows(12, seed=7) if r["task"] == "add"][:4], ["a", "a", "b", "b"], strict=True)]
    return {"pool": _write(tmp_path / "pool.jsonl", pool), "targets": _write(tmp_path / "targets.jsonl", targets),
            "rows": pool, "db": str(tmp_path / "sw.db"), "out": str(tmp_path / "grads")}


LESS_ARGS = ["--model", "tiny", "--warmup-fraction", "0.2", "--epochs", "2", "--learning-rate", "1e-3",
             "--dim", "128", "--lora-r", "4", "--lora-alpha", "8", "--fraction", "0.1", "--max-length", "64"]


def test_less_selects_on_target_rows_stores_provenance_and_exports(files, capsys, tmp_path):
    args = ["--db", files["db"], "select", "less", "--pool", files["pool"], "--targets", files["targets"],
            "--out", files["out"], *LESS_ARGS, "--json"]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    result = json.loads(out)
    assert result["n_pool"] == 45 and result["n_selected"] == 4 and result["checkpoints"] == [1, 2]
    assert sum(result["weights"]) == pytest.approx(1.0)

    store = Store(files["db"])
    selection = store.db["selections"].get(result["selection_id"])
    provenance = json.loads(selection["provenance"])
    assert provenance["config"]["dim"] == 128 and provenance["checkpoints"] == [1, 2] and provenance["n_subtasks"] == 2
    rows = list(store.db["selection_rows"].rows_where("selection_id = ?", [result["selection_id"]], order_by="rank"))
    chosen_tasks = [files["rows"][r["row_index"]]["task"] for r in rows]
    assert chosen_tasks.count("add") >= 3, chosen_tasks  # random would give ≈ 1.3 of 4
    assert [r["item_id"] for r in rows] == [files["rows"][r["row_index"]]["item_id"] for r in rows]
    assert store.db["less_datastores"].count == 4  # pool + targets × 2 checkpoints
    assert {r["status"] for r in store.db["less_datastores"].rows} == {"complete"}
    items = list(store.items(result["selection_id"], kind="selected"))
    assert [i["parent_id"] for i in items] == [r["item_id"] for r in rows]

    exported = tmp_path / "sel.jsonl"
    code, _, err = _cli(capsys, "--db", files["db"], "select", "export", result["selection_id"], "-o", str(exported))
    assert code == 0, err
    assert [json.loads(line) for line in exported.read_text().splitlines()] == [files["rows"][r["row_index"]]
                                                                                 for r in rows]
    # A rerun reuses the warmup and the datastore and finds the same selection (no duplicates).
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and json.loads(out)["selection_id"] == result["selection_id"]
    assert store.db["selections"].count == 1 and store.db["selection_rows"].count == 4

    code, out, _ = _cli(capsys, "--db", files["db"], "select", "show", result["selection_id"])
    assert code == 0 and "row_index" in out and "less" in out


def test_baselines_random_and_rds_from_a_store_run(files, capsys, tmp_path):
    store = Store(files["db"])
    run_id = store.create_run("test", {})
    for i, row in enumerate(files["rows"]):
        store.ensure_item(run_id, "example", i, status="done",
                          payload={"instruction": row["prompt"], "response": row["completion"]})
    store.ensure_item(run_id, "example", 99, status="pending", payload={"instruction": "no response yet"})
    code, out, err = _cli(capsys, "--db", files["db"], "select", "random", "--run", run_id, "--fraction", "0.2",
                          "--out", files["out"], "--json")
    assert code == 0, err
    assert json.loads(out)["n_pool"] == 45 and json.loads(out)["n_selected"] == 9
    code, out, err = _cli(capsys, "--db", files["db"], "select", "rds", "--run", run_id, "--targets",
                          files["targets"], "--model", "tiny", "--fraction", "0.1", "--out", files["out"], "--json")
    assert code == 0, err
    rds = json.loads(out)
    selected = list(store.items(rds["selection_id"], kind="selected"))
    assert len(selected) == 4 and all(i["parent_id"] for i in selected)
    code, out, _ = _cli(capsys, "--db", files["db"], "select", "list", "--json")
    assert {r["method"] for r in json.loads(out)} == {"random", "rds"}
    # A selection is a run: the store's own exporter writes it like any dataset.
    target = tmp_path / "rds.jsonl"
    code, _, err = _cli(capsys, "--db", files["db"], "export", rds["selection_id"], "--out", str(target))
    assert code == 0, err
    exported = [json.loads(line) for line in target.read_text().splitlines()]
    by_prompt = {r["prompt"]: r["completion"] for r in files["rows"]}
    assert len(exported) == 4 and all(by_prompt[r["instruction"]] == r["output"] for r in exported)


def test_user_errors_are_one_line_with_exit_2(files, capsys, tmp_path):
    code, _, err = _cli(capsys, "--db", files["db"], "select", "less", "--pool", files["pool"])
    assert code == 2 and err.strip().startswith("Error:") and "--targets" in err and len(err.strip().splitlines()) == 1
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b", "subtask": s} for s in "aba"])
    code, _, err = _cli(capsys, "--db", files["db"], "select", "less", "--pool", files["pool"], "--targets", bad,
                        "--out", files["out"], *LESS_ARGS)
    assert code == 2 and "contiguous" in err
    code, _, err = _cli(capsys, "--db", files["db"], "select", "show", "select-less-nope")
    assert code == 2 and "select list" in err
    code, _, err = _cli(capsys, "--db", files["db"], "select", "less", "--pool", files["pool"], "--targets",
                        files["targets"], "--adam-variant", "fancy")
    assert code == 2 and "fancy" in err


def test_every_select_command_has_help():
    from skillweave.cli import cli

    group = cli.commands["select"]
    assert group.help
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


@pytest.mark.slow
def test_less_runs_on_the_embedded_model(tmp_path, capsys):
    """The whole pipeline through the CLI on SmolLM2-135M (skipped when the embedded model is not installed)."""
    from skillweave.errors import ConfigError
    from skillweave.trainers.models import load_model_and_tokenizer

    try:
        load_model_and_tokenizer("local")
    except ConfigError as exc:
        pytest.skip(str(exc))
    pool = [{"instruction": f"What is {a} plus {b}?", "output": f"{a + b}."} for a, b in [(2, 3), (7, 1), (4, 4)]]
    pool += [{"instruction": f"Name a colour like {c}.", "output": f"{c.title()} is a colour."}
             for c in ("red", "blue", "green")]
    targets = [{"instruction": "What is 5 plus 6?", "output": "11."}, {"instruction": "What is 1 plus 8?", "output": "9."}]
    db = str(tmp_path / "sw.db")
    code, out, err = _cli(capsys, "--db", db, "select", "less", "--pool", _write(tmp_path / "pool.jsonl", pool),
                          "--targets", _write(tmp_path / "t.jsonl", targets), "--model", "local",
                          "--out", str(tmp_path / "grads"), "--warmup-fraction", "0.5", "--epochs", "2",
                          "--learning-rate", "1e-4", "--lora-r", "2", "--lora-alpha", "8", "--lora-targets", "q_proj",
                          "--dim", "64", "--max-length", "96", "--fraction", "0.5", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n_selected"] == 3 and result["checkpoints"] == [1, 2]
    rows = list(Store(db).db["selection_rows"].rows_where(order_by="rank"))
    assert len(rows) == 3 and all(isinstance(r["score"], float) for r in rows)
