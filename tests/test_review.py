"""Human review mid-loop: pause at an interrupt, survive a process exit, resume exactly one thread from the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from test_math2 import _fresh_providers, events, items, make_store, script, start  # noqa: F401  (autouse fixture)

from skillweave.agents.llm import RunContext
from skillweave.agents.review import (
    make_decision,
    parse_llm_review,
    parse_reviewer,
    review_queue,
)
from skillweave.cli import cli, main
from skillweave.decisions import submit_decision
from skillweave.errors import ConfigError, UsageError
from skillweave.graphs.runtime import checkpointer, paused_threads, thread_config
from skillweave.pipelines import get_pipeline
from skillweave.store import Store


def invoke(db, *args) -> dict | list | str:
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def thread_state(store: Store, run_id: str, thread_id: str):
    from skillweave.graphs.math2 import build_graph

    async def get():
        async with checkpointer(store) as saver:
            return await build_graph(checkpointer=saver).aget_state(thread_config(thread_id))

    return asyncio.run(get())


@pytest.fixture
def paused(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, summary = start(store, bank, n=3, reviewer="human", max_pairs=2)
    assert summary.paused == 3
    return store, run_id


def test_human_reviewer_pauses_every_thread_with_what_to_show(paused):
    store, run_id = paused
    assert [i["status"] for i in items(store, run_id)] == ["review"] * 3
    ctx = RunContext(store=store, run_id=run_id, config=store.get_run(run_id)["config"])
    waiting = asyncio.run(paused_threads(get_pipeline("math2"), ctx))
    assert len(waiting) == 3
    request = waiting[0][1][0]
    assert set(request["editable"]) == {"question", "solution", "answer"}
    labels = [s["label"] for s in request["context"]]
    assert "Solver attempt, round 1" in labels and any(lab.startswith("Critic verdicts") for lab in labels)
    assert store.get_run(run_id)["status"] == "paused"


def test_cli_list_show_approve_edit_reject(paused):
    store, run_id = paused
    db = store.path
    queue = invoke(db, "review", "list", "--json")
    assert len(queue) == 3 and {q["run_id"] for q in queue} == {run_id}
    first, second, third = (q["item_id"] for q in queue)
    shown = invoke(db, "review", "show", first[:10], "--json")
    assert shown["waiting"] and shown["request"]["editable"]["answer"] == "42"

    approved = invoke(db, "review", "approve", first, "--as", "alice", "--json")
    assert approved["status"] == "accepted" and approved["paused_in_run"] == 2

    edited = invoke(db, "review", "edit", second, "--answer", "43", "--solution", "fixed: \\boxed{43}",
                    "--reason", "slip", "--as", "bob", "--json")
    assert edited["status"] == "accepted"
    item = store.get_item(second)
    assert item["payload"]["answer"] == "43" and item["payload"]["reviewed_by"] == "bob"
    (review,) = store.db["reviews"].rows_where("item_id = ?", [second])
    changes = json.loads(review["changes"])
    assert review["reviewer"] == "bob" and review["decision"] == "edit" and review["reason"] == "slip"
    assert changes["answer"] == {"before": "42", "after": "43"} and "question" not in changes and changes["_at"]

    rejected = invoke(db, "review", "reject", third, "--reason", "uses one skill", "--json")
    assert rejected["status"] == "dropped"
    dropped = store.get_item(third)
    assert dropped["payload"]["drop_stage"] == "review" and "uses one skill" in dropped["error"]
    # the rejected thread drew a new pair (max_pairs=2) that now waits for review in its place
    queue = invoke(db, "review", "list", "--json")
    assert len(queue) == 1 and queue[0]["item_id"] not in (first, second, third)
    replacement = store.get_item(queue[0]["item_id"])
    assert replacement["combo_index"] == dropped["combo_index"] and replacement["round"] == 1

    # each resumed thread finished in the checkpoint, not only in the items table
    state = thread_state(store, run_id, approved["thread_id"])
    assert not state.interrupts and not state.next and state.values["status"] == "accepted"


def test_decision_errors_are_one_line_usage_errors(paused, capsys):
    store, _ = paused
    item_id = next(iter(items(store, store.list_runs(1)[0]["id"])))["id"]
    for args, message in (
        (["review", "reject", item_id, "--reason", ""], "needs a reason"),
        (["review", "edit", item_id], "at least one changed field"),
        (["review", "edit", item_id, "--set", "topic=x"], "cannot edit topic"),
        (["review", "approve", "nope"], "no item 'nope'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["--db", store.path, *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1
    invoke(store.path, "review", "approve", item_id)
    with pytest.raises(SystemExit):
        main(["--db", store.path, "review", "approve", item_id])
    assert "is not waiting for review (status: accepted)" in capsys.readouterr().err


def test_pause_survives_closing_the_store_and_resumes_with_a_new_connection(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, _ = start(store, bank, reviewer="human")
    path = store.path
    store.close()
    fresh = Store(path)  # nothing in memory survives: queue, checkpoint and decision all come from the file
    (item,) = fresh.db["items"].rows_where("status = 'review'")
    result = submit_decision(fresh, item["id"], make_decision("approve", reviewer="dana"))
    assert result["status"] == "accepted" and fresh.get_run(run_id)["status"] == "done"


@pytest.mark.slow
def test_pause_survives_process_exit_and_resumes_from_the_cli(tmp_path):
    db = tmp_path / "restart.db"
    code = "import sys; from skillweave.cli import main; main(sys.argv[1:])"

    def skillweave(*args):
        return subprocess.run([sys.executable, "-c", code, "--db", str(db), *args], capture_output=True, text=True,
                              timeout=300)

    first = skillweave("run", "math2", "--model", "fake", "--n", "1", "--reviewer", "human", "--bank", "bundled")
    assert first.returncode == 4, first.stderr  # paused for review: exit 4
    assert "1 paused for review" in first.stderr
    queue = [dict(r) for r in Store(db).db["items"].rows_where("status = 'review'")]
    assert len(queue) == 1
    done = skillweave("review", "approve", queue[0]["id"], "--as", "carol", "--json")  # a second process resumes it
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "accepted"
    store = Store(db)
    assert store.get_run(queue[0]["run_id"])["status"] == "done"
    assert [r["reviewer"] for r in store.db["reviews"].rows] == ["carol"]


def test_llm_and_auto_reviewers(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, _ = start(store, bank, reviewer="llm:fake")
    (item,) = items(store, run_id)
    assert item["status"] == "accepted"
    (review,) = store.db["reviews"].rows_where("item_id = ?", [item["id"]])
    assert review["reviewer"] == "llm:fake" and review["decision"] == "approve"
    assert store.db["llm_calls"].count_where("role = 'reviewer'") == 1
    run_id, _ = start(store, bank, reviewer="auto")
    assert [r["reviewer"] for r in store.db["reviews"].rows_where("run_id = ?", [run_id])] == ["auto"]


def test_reviewer_specs_and_llm_reply_parsing():
    assert parse_reviewer("human") == "human" and parse_reviewer("llm:openai:gpt-4o") == "llm:openai:gpt-4o"
    for bad in ("person", "llm:gtp"):
        with pytest.raises(ConfigError, match="reviewer"):
            parse_reviewer(bad)
    assert parse_llm_review("Decision: **Reject**\nReason: ambiguous units") == ("reject", "ambiguous units")
    assert parse_llm_review("Decision: approve")[0] == "approve"
    action, reason = parse_llm_review("I like it")
    assert action == "reject" and "unparseable" in reason
    with pytest.raises(UsageError):
        make_decision("maybe")


def test_every_review_and_math2_command_has_help_and_json():
    groups = {"review": cli.commands["review"], "run": cli.commands["run"], "eval": cli.commands["eval"]}
    mine = [("review", n) for n in ("list", "show", "approve", "edit", "reject", "import", "serve")] + \
        [("run", "math2"), ("eval", "math2"), ("eval", "square-law")]
    for group, name in mine:
        command = groups[group].get_command(click.Context(groups[group]), name)  # run/eval build commands lazily
        assert command.help and "Example" in command.help, f"{group} {name} lacks help"
        if name not in ("serve", "math2") or group == "eval":  # `run` prints the report table like `run skillmix`
            assert "as_json" in {p.name for p in command.params}, f"{group} {name} lacks --json"


def test_export_then_import_decisions(paused, tmp_path):
    store, run_id = paused
    path = tmp_path / "queue.jsonl"
    CliRunner().invoke(cli, ["--db", store.path, "review", "export", str(path)], catch_exceptions=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["question"] and rows[0]["action"] == "" and rows[0]["context"]
    rows[0]["action"] = "approve"
    rows[1].update(action="edit", answer="7")
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")  # the third stays undecided
    result = invoke(store.path, "review", "import", str(path), "--as", "erin", "--json")
    assert [(r["action"], r["status"]) for r in result] == [("approve", "accepted"), ("edit", "accepted")]
    assert store.get_item(rows[1]["item_id"])["payload"]["answer"] == "7"
    assert store.get_item(rows[2]["item_id"])["status"] == "review"
    assert {r["reviewer"] for r in store.db["reviews"].rows} == {"erin"}


def test_two_reviewers_cannot_both_resume_one_item(paused):
    import threading

    store, run_id = paused
    item_id = items(store, run_id)[0]["id"]
    outcomes: list[str] = []

    def decide(name):
        try:
            outcomes.append(submit_decision(store, item_id, make_decision("approve", reviewer=name))["status"])
        except UsageError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=decide, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("accepted") == 1, outcomes
    assert any("decided by someone else" in o or "not waiting for review" in o for o in outcomes)
    assert store.db["reviews"].count_where("item_id = ?", [item_id]) == 1


def test_a_claim_abandoned_by_a_dead_process_reopens_the_item(paused):
    store, run_id = paused
    fresh, stale = (i["id"] for i in items(store, run_id)[:2])
    store.db.execute("update items set status = 'deciding' where id in (?, ?)", [fresh, stale])
    store.db.execute("update items set updated_at = '2000-01-01T00:00:00.000+00:00' where id = ?", [stale])
    assert {i["id"] for i in review_queue(store)} == {stale, items(store, run_id)[2]["id"]}
    with pytest.raises(UsageError, match="not waiting for review"):
        submit_decision(store, fresh, make_decision("approve", reviewer="x"))
    assert submit_decision(store, stale, make_decision("approve", reviewer="x"))["status"] == "accepted"
