"""Lineage-driven unlearning through the CLI: selectors, store-trained topic models, versions, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from skillweave.cli import cli, main
from skillweave.store import Store
from skillweave.trainers.unlearning.lineage import (
    count_matrix,
    load_model,
    resolve_selectors,
    store_documents,
)
from skillweave.trainers.unlearning.topic_model import fit

TOPIC_WORDS = {
    "astronomy": "telescope galaxy orbit planet comet nebula star lens",
    "cooking": "oven flour butter recipe knead dough bake spice",
    "sailing": "harbor mast wind sail anchor tide keel rope",
    "chess": "bishop knight pawn rook gambit castle queen opening",
}


@pytest.fixture()
def db(tmp_path):
    """A store filled like a generation run: two runs, skills, template versions, calls, a derived item."""
    path = str(tmp_path / "sw.db")
    store = Store(path)
    rng = np.random.default_rng(0)
    store.put_prompt_version("b2:gen1", "demo/generate", "Write about {{topic}}.")
    store.put_prompt_version("b2:gen2", "demo/generate", "Write briefly about {{topic}}.")
    topics = list(TOPIC_WORDS)
    for r, run_name in enumerate(("run-a", "run-b")):
        run_id = store.create_run("demo", {"n": 30}, run_id=run_name)
        for i in range(30):
            topic = topics[(i + r) % 4]
            words = TOPIC_WORDS[topic].split()
            text = " ".join(rng.choice(words, size=12)) + " " + " ".join(rng.choice(sum(
                (w.split() for w in TOPIC_WORDS.values()), []), size=3))
            version = "b2:gen1" if i % 2 else "b2:gen2"
            skills = ["simile", "irony"] if i % 3 == 0 else ["metaphor"]
            item_id = store.ensure_item(run_id, "demo.text", i, skills=skills, topic=topic)
            store.update_item(item_id, payload_update={"prompt_0": "ignored prompt words zebra", "text_0": text},
                              prompt_versions=[version], status="done")
            store.record_call(run_id=run_id, item_id=item_id, role="student", provider="fake", model="fake",
                              prompt_version=version, request={}, response={"text": text})
    parent = store.item_id("run-a", "demo.text", 0)
    child = store.ensure_item("run-a", "demo.rewrite", 0, parent_id=parent, skills=[])
    store.update_item(child, payload_update={"text": "telescope galaxy orbit planet comet rewrite"}, status="done")
    store.close()
    return path


def invoke(db, *args):
    result = CliRunner().invoke(cli, ["--db", db, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_selectors_follow_lineage(db):
    store = Store(db)
    parent = store.item_id("run-a", "demo.text", 0)
    child = store.item_id("run-a", "demo.rewrite", 0)
    by_item = resolve_selectors(store, [f"item:{parent}"])
    assert by_item == {parent: f"item:{parent}", child: "lineage:parent"}
    assert len(resolve_selectors(store, ["run:run-b"])) == 30
    assert len(resolve_selectors(store, ["run:latest"])) == 30
    skill = resolve_selectors(store, ["skill:simile"])
    assert len(skill) == 2 * 10 + 1  # i % 3 == 0 in both runs, plus the rewrite of item 0
    by_version = resolve_selectors(store, ["template:b2:gen1"])
    by_name = resolve_selectors(store, ["template:demo/generate"])
    assert len(by_version) == 30 and len(by_name) == 61
    union = resolve_selectors(store, ["run:run-b", "template:b2:gen1"])
    assert len(union) == 30 + 15


def test_bag_of_words_uses_generated_text_not_prompts(db):
    docs = store_documents(Store(db))
    assert len(docs) == 61
    assert not any("zebra" in tokens for tokens in docs.values())


def test_cli_unlearn_records_request_and_equals_retraining(db):
    out = json.loads(invoke(db, "topic-model", "train", "--topics", "4", "--json"))
    assert out["version"] == 1 and out["n_docs"] == 61
    report = json.loads(invoke(db, "unlearn", "--forget", "skill:simile", "--noiseless", "--json"))
    assert report["forget_items"] == 21 and report["forget_items_in_model"] == 21
    store = Store(db)
    new, row = load_model(store, report["new_model_id"])
    assert row["version"] == 2 and row["parent_id"] == out["id"] and new.m == 40
    request = store.db["unlearning_requests"].get(report["request_id"])
    assert request["n_forget"] == 21 and json.loads(request["selectors"]) == ["skill:simile"]
    assert store.db["forget_sets"].count_where("request_id = ?", [report["request_id"]]) == 21
    kept = [r["item_id"] for r in store.db.query(
        "select item_id from topic_model_docs where model_id = ?", [report["new_model_id"]])]
    assert len(kept) == 40 and not set(kept) & set(resolve_selectors(store, ["skill:simile"]))
    # retrain from scratch on the retained items with the same vocabulary and anchors: the same model
    docs = store_documents(store, kept)
    H = count_matrix([docs[i] for i in kept], new.vocab)
    retrained = fit(H, new.config, vocab=new.vocab, anchors=new.anchors)
    np.testing.assert_allclose(new.q_sum, retrained.q_sum, atol=1e-12)
    assert np.abs(new.A - retrained.A).sum() < 1e-8
    # a noisy request releases perturbed parameters and reports sigma and the deletion capacity
    noisy = json.loads(invoke(db, "unlearn", "--forget", "run:run-b", "--model", report["new_model_id"],
                              "--utility-threshold", "1e6", "--json"))
    assert noisy["sigma"] > 0 and noisy["forget_items_in_model"] == 30 - 10
    assert noisy["stats"]["capacity"] >= noisy["stats"]["deleted_since_training"] == 21 + 20
    listed = invoke(db, "topic-model", "list")
    assert report["new_model_id"] in listed and noisy["new_model_id"] in listed
    assert "topic 0" in invoke(db, "topic-model", "show", noisy["new_model_id"])


def test_cli_dry_run_and_export_forget(db, tmp_path):
    dry = json.loads(invoke(db, "topic-model", "train", "--topics", "3", "--json"))
    out = json.loads(invoke(db, "unlearn", "--forget", "run:run-a", "--dry-run", "--json"))
    assert out["dry_run"] and out["forget_items"] == 31
    assert Store(db).db["unlearning_requests"].count == 0 and dry["version"] == 1
    report = json.loads(invoke(db, "export-forget", "--forget", "skill:simile", "--out", str(tmp_path / "x"),
                               "--json"))
    forget = [json.loads(line) for line in open(tmp_path / "x" / "forget.jsonl")]
    retain = [json.loads(line) for line in open(tmp_path / "x" / "retain.jsonl")]
    assert report["forget"] == len(forget) == 21 and report["retain"] == len(retain) == 40
    assert {"question", "answer", "item_id"} <= set(forget[0])
    assert not {r["item_id"] for r in forget} & {r["item_id"] for r in retain}


@pytest.mark.parametrize("args, message", [
    (["unlearn", "--forget", "bogus"], "bad selector 'bogus'"),
    (["unlearn", "--forget", "item:nope"], "no item 'nope'"),
    (["unlearn", "--forget", "skill:simile"], "no topic model"),
    (["unlearn", "--forget", "run:nope"], "no run 'nope'"),
    (["unlearn", "--forget", "skill:none-such"], "matches no items"),
    (["unlearn", "--forget", "run:run-b", "--utility-threshold", "0"], "Invalid value for '--utility-threshold'"),
])
def test_cli_errors_are_one_line(db, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["--db", db, *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_every_command_has_help():
    for name in ("unlearn", "export-forget", "topic-model"):
        command = cli.commands[name]
        assert command.help
        for sub in getattr(command, "commands", {}).values():
            assert sub.help


def test_unlearn_after_a_generation_run(tmp_path):
    """End to end: a Skill-Mix run on the scripted fake model fills the store; unlearn one template's items."""
    db = str(tmp_path / "gen.db")
    invoke(db, "run", "skillmix", "--model", "fake", "--k", "2", "--n", "12", "--rounds", "1",
           "--grading-samples", "1")
    model = json.loads(invoke(db, "topic-model", "train", "--topics", "3", "--json"))
    store = Store(db)
    item = next(iter(store.items()))
    skill = item["skills"][0]
    report = json.loads(invoke(db, "unlearn", "--forget", f"skill:{skill}", "--forget", f"item:{item['id']}",
                               "--noiseless", "--json"))
    assert report["forget_items"] >= 1 and report["forget_items_in_model"] == report["forget_items"]
    new, row = load_model(store, report["new_model_id"])
    assert row["parent_id"] == model["id"] and new.m == model["n_docs"] - report["forget_items"]
    student = store.db.execute("select name from prompt_versions where name like '%student%'").fetchone()
    if student:  # template lineage: every generated item used the student template
        assert len(resolve_selectors(store, [f"template:{student[0]}"])) == store.db["items"].count
    # scripted replies repeat texts, so words tie in the anchor search: unlearning must break ties as
    # retraining does (by word id, not by rounding) to stay equal to it
    skills = sorted({s for it in store.items() for s in it["skills"] or []})
    for name in skills[:6]:
        out = json.loads(invoke(db, "unlearn", "--model", model["id"], "--forget", f"skill:{name}", "--noiseless",
                                "--verify", "--json"))
        assert out["verify"]["anchors_agree"] and out["verify"]["max_abs_diff"] < 1e-8, (name, out["verify"])


def test_cli_head_unlearning_equals_retraining_base_and_head(db):
    """Uhead through the CLI: the base row is untouched, and the released B equals retraining both the topic
    model and the head on the retained items (the head-only refit of the old Uhead does not)."""
    from skillweave.trainers.unlearning.unlearn import fit_head

    model = json.loads(invoke(db, "topic-model", "train", "--topics", "4", "--json"))
    head = json.loads(invoke(db, "topic-model", "head", "--label", "skill:simile", "--json"))
    assert head["model_id"] == model["id"] and head["positives"] == 21 and head["n_docs"] == 61
    store = Store(db)
    before = store.db["topic_models"].get(model["id"])["state"]
    report = json.loads(invoke(db, "unlearn", "--head", "latest", "--forget", "run:run-b", "--noiseless",
                               "--verify", "--json"))
    assert report["head_id"] == head["id"] and report["forget_items_in_model"] == 30
    assert store.db["topic_models"].get(model["id"])["state"] == before  # A and its statistics bit-identical
    assert store.db["topic_models"].count_where("kind = 'base'") == 1    # no new topic-model version
    v = report["verify"]
    assert v["retrained_docs"] == 31 and v["anchors_agree"] and v["max_abs_diff"] < 1e-8
    # independent check: retrain base and head on the kept items; compare with the released B
    kept = [r["item_id"] for r in store.db.query(
        "select item_id from topic_model_docs where model_id = ? order by item_id", [report["new_head_id"]])]
    tm, _ = load_model(store, model["id"])
    docs = store_documents(store, kept)
    H = count_matrix([docs[i] for i in kept], tm.vocab)
    y = np.array([float(i in resolve_selectors(store, ["skill:simile"])) for i in kept])
    base_r = fit(H, tm.config, vocab=tm.vocab)
    B_r = base_r.A @ fit_head(H, y, base_r.C).w
    released = np.load(__import__("io").BytesIO(store.db["topic_models"].get(report["new_head_id"])["released"]))
    np.testing.assert_allclose(released["B"], B_r, atol=1e-8)
    head_only = tm.A @ fit_head(H, y, tm.C).w  # what the head-only Uhead released: A still carries run-b
    assert np.abs(head_only - B_r).max() > 1e-4
    # a second request on the new head starts from the privately downdated base
    again = json.loads(invoke(db, "unlearn", "--head", report["new_head_id"], "--forget", "skill:simile",
                              "--noiseless", "--verify", "--json"))
    assert again["verify"]["retrained_docs"] == 31 - 11 and again["verify"]["max_abs_diff"] < 1e-8
    assert "head" in invoke(db, "topic-model", "requests")
    still = store.db.execute("select item_id from topic_model_docs where model_id = ? order by item_id limit 1",
                             [again["new_head_id"]]).fetchone()[0]
    text = invoke(db, "unlearn", "--head", "latest", "--forget", "item:" + still, "--utility-threshold", "1e6",
                  "--verify")
    assert "verify: retrained on 19 items" in text and "deletion capacity" in text


def test_cli_verify_with_and_without_anchor_changes(db, capsys):
    """--verify retrains from scratch: exact when anchors are re-searched, even where they change; with
    --keep-anchors the same request keeps a stale anchor and differs from retraining."""
    model = json.loads(invoke(db, "topic-model", "train", "--topics", "4", "--json"))
    anchors = model["anchors"]
    store = Store(db)
    docs = store_documents(store)
    hit = sorted(i for i, tokens in docs.items() if anchors[0] in tokens)  # every item with the first anchor
    most = ["--model", model["id"], "--forget", "item:" + ",".join(hit[:-1]), "--noiseless", "--verify", "--json"]
    exact = json.loads(invoke(db, "unlearn", *most))
    v = exact["verify"]
    assert exact["stats"]["anchors_changed"] and exact["stats"]["anchor_search"] == "re-searched"
    assert v["anchors_agree"] and v["max_abs_diff"] < 1e-8
    kept = json.loads(invoke(db, "unlearn", *most, "--keep-anchors"))
    assert kept["stats"]["anchor_search"] == "kept" and not kept["stats"]["anchors_changed"]
    assert not kept["verify"]["anchors_agree"] and kept["verify"]["max_abs_diff"] > 1e-3
    everything = ["--model", model["id"], "--forget", "item:" + ",".join(hit), "--noiseless"]
    gone = json.loads(invoke(db, "unlearn", *everything, "--verify", "--json"))
    vocab = load_model(store, model["id"])[0].vocab
    assert vocab.index(anchors[0]) in gone["stats"]["anchors_before"]
    assert vocab.index(anchors[0]) not in gone["stats"]["anchors_after"] and gone["verify"]["max_abs_diff"] < 1e-8
    with pytest.raises(SystemExit) as exc:
        main(["--db", db, "unlearn", *everything, "--keep-anchors"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "anchor word" in err and len(err.splitlines()) == 1
    text = invoke(db, "unlearn", "--model", model["id"], "--forget", "item:" + hit[0], "--noiseless", "--verify")
    assert "verify: retrained on" in text and "anchors agree yes" in text


def test_cli_refuses_a_request_beyond_the_deletion_capacity(db, capsys):
    invoke(db, "topic-model", "train", "--topics", "4")
    with pytest.raises(SystemExit) as exc:
        main(["--db", db, "unlearn", "--forget", "run:run-b"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("Error: ") and "deletion capacity" in err
    assert Store(db).db["unlearning_requests"].count == 0  # nothing recorded for a refused request
