"""A run owns its prompts: continuations load the run's folder and template versions, or stop with an error;
versions hash what is sent; test scaffolding never reaches a real model."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from test_math2 import _fresh_providers, items, make_store  # noqa: F401  (autouse fixture)
from test_review import invoke

from skillweave.agents.llm import RunContext, call_template
from skillweave.agents.math2 import default_config
from skillweave.graphs.runtime import run_pipeline
from skillweave.pipelines import get_pipeline
from skillweave.prompts import PACKAGE_DIR, load_template
from skillweave.providers.core import ChatResult, Provider, register_provider
from skillweave.store import Store

SKILLMIX = ["run", "skillmix", "--model", "fake", "--judge", "fake:fail", "--k", "2", "--n", "2", "--rounds", "1",
            "--grading-samples", "1"]


def user_folder(root: Path, *names: str, marker: str = "Please be careful.") -> Path:
    """A --prompts-dir that overrides `names` with edited copies (the prompt gains `marker`)."""
    for name in names:
        target = root / f"{name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        edit_prompt(target, (PACKAGE_DIR / f"{name}.yaml").read_text(), marker)
    return root


def edit_prompt(path: Path, text: str, marker: str) -> None:
    key = "prompt: |\n" if "prompt: |\n" in text else "turns:\n  - |\n"
    assert key in text, path
    after = text[text.index(key) + len(key):]
    indent = after[:len(after) - len(after.lstrip(" "))]  # the block's own indentation
    path.write_text(text.replace(key, f"{key}{indent}{marker}\n", 1))


def versions(store: Store, role: str) -> set[str]:
    return {r["prompt_version"] for r in store.db["llm_calls"].rows_where("role = ?", [role])}


def dump(store: Store) -> list[str]:
    """The whole store as SQL, to show that a refused continuation wrote nothing."""
    return list(store.db.conn.iterdump())


def judge_back(store: Store, run: dict) -> None:
    store.db["runs"].update(run["id"], {"config": json.dumps({**run["config"], "judge": "fake"})})


@pytest.fixture
def user_run(tmp_path, cli_run, db_path):
    """A Skill-Mix run made with a --prompts-dir (student and judge edited) whose judge failed."""
    folder = user_folder(tmp_path / "mine", "skillmix/student", "skillmix/judge")
    code, _, err = cli_run("--prompts-dir", str(folder), *SKILLMIX)
    assert code == 3, err  # its judge failed: exit 3
    store = Store(db_path)
    run = store.get_run("latest")
    judge_back(store, run)
    return store, run, folder


# ---- continuing a run uses its own prompts -----------------------------------------------------------
def test_resume_without_prompts_dir_uses_the_runs_folder_and_reuses_replies(user_run, cli_run):
    store, run, folder = user_run
    student = load_template("skillmix/student", folder)
    judge = load_template("skillmix/judge", folder)
    assert store.get_run(run["id"])["prompts_dir"] == str(folder.resolve())
    calls = store.db["llm_calls"].count_where("role = 'student'")
    code, _, err = cli_run("resume", run["id"], "--retry-failed")  # no --prompts-dir this time
    assert code == 0, err
    assert store.db["llm_calls"].count_where("role = 'student'") == calls  # no reply paid twice
    assert versions(store, "student") == {student.version}
    assert versions(store, "judge") == {judge.version}  # the new judge calls use the run's edited judge
    assert {i["status"] for i in store.items(run["id"])} == {"done"}


def test_a_changed_template_stops_the_resume_and_the_flag_allows_it(user_run, cli_run):
    store, run, folder = user_run
    before = load_template("skillmix/judge", folder).version
    path = folder / "skillmix" / "judge.yaml"
    edit_prompt(path, path.read_text(), "Write plainly.")
    after = load_template("skillmix/judge", folder).version
    before_dump = dump(store)
    code, out, err = cli_run("resume", run["id"], "--retry-failed")
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"template 'skillmix/judge' was {before}, is now {after}" in err and "--allow-changed-prompts" in err
    assert dump(store) == before_dump  # nothing written: no call, no status change, no pin

    code, _, err = cli_run("resume", run["id"], "--retry-failed", "--allow-changed-prompts")
    assert code == 0, err
    assert versions(store, "judge") == {before, after}  # failed under the old, graded under the new
    pinned = {r["version"] for r in store.db["run_prompts"].rows_where("run_id = ? and name = ?",
                                                                         [run["id"], "skillmix/judge"])}
    assert pinned == {after}
    assert store.db["events"].count_where("run_id = ? and stage = 'prompts' and status = 'changed'", [run["id"]]) == 1
    code, _, err = cli_run("resume", run["id"])  # pinned to the new version now: nothing to refuse
    assert code == 0, err


def test_another_prompts_dir_is_refused_unless_allowed(user_run, cli_run, tmp_path):
    store, run, folder = user_run
    other = user_folder(tmp_path / "other", "skillmix/student")
    code, _, err = cli_run("--prompts-dir", str(other), "resume", run["id"])
    assert code == 2 and f"was made with prompts folder '{folder.resolve()}'" in err and err.count("\n") == 1
    code, _, err = cli_run("resume", run["id"])
    assert code == 3, err  # the judge fails: exit 3
    code, _, err = cli_run("--prompts-dir", str(other), "resume", run["id"], "--allow-changed-prompts")
    assert code == 3, err  # the judge fails: exit 3
    assert store.get_run(run["id"])["prompts_dir"] == str(other.resolve())


def test_a_deleted_prompts_folder_is_named(user_run, cli_run):
    store, run, folder = user_run
    shutil.rmtree(folder)
    code, _, err = cli_run("resume", run["id"])
    assert code == 2 and "does not exist any more" in err and str(folder.resolve()) in err and err.count("\n") == 1


def test_a_packaged_run_refuses_a_prompts_dir_on_resume(cli_run, db_path, tmp_path):
    code, _, err = cli_run(*SKILLMIX)
    assert code == 3, err  # the judge fails: exit 3
    store = Store(db_path)
    run = store.get_run("latest")
    assert run["prompts_dir"] == ""
    code, _, err = cli_run("--prompts-dir", str(user_folder(tmp_path / "u", "skillmix/judge")), "resume", run["id"])
    assert code == 2 and "was made with the packaged templates" in err


@pytest.fixture
def paused_math2(tmp_path):
    """A MATH² run made with an edited math2/qgen, paused for a human, able to draw a second pair."""
    folder = user_folder(tmp_path / "mine", "math2/qgen")
    store, bank = make_store(tmp_path)
    config = default_config(bank, model="fake", n=1, max_pairs=2, reviewer="human")
    run_id = store.create_run("math2", config)
    summary = run_pipeline(get_pipeline("math2"), store, run_id, prompts_dir=str(folder), progress=False)
    assert summary.paused == 1
    user = load_template("math2/qgen", folder).version
    assert versions(store, "qgen") == {user} and user != load_template("math2/qgen").version
    return store, run_id, user


def test_review_reject_draws_the_next_pair_with_the_runs_templates(paused_math2):
    store, run_id, user = paused_math2
    (item,) = items(store, run_id)
    invoke(store.path, "review", "reject", item["id"], "--reason", "one skill only", "--json")
    assert store.db["llm_calls"].count_where("role = 'qgen'") == 2  # the rejected thread drew a new pair
    assert versions(store, "qgen") == {user}


def test_review_serve_resumes_with_the_runs_templates(paused_math2):
    from skillweave.web import create_app

    store, run_id, user = paused_math2
    token = "test-token-0123456789"
    client = TestClient(create_app(store, token=token), headers={"Authorization": f"Bearer {token}"},
                        follow_redirects=False)
    (item,) = items(store, run_id)
    response = client.post(f"/item/{item['id']}/decide", data={"action": "reject", "csrf": token, "reason": "no"})
    assert response.status_code == 303
    assert store.db["llm_calls"].count_where("role = 'qgen'") == 2 and versions(store, "qgen") == {user}


# ---- versions hash what is sent ----------------------------------------------------------------------
def test_version_ignores_description_and_fake_replies_but_not_what_is_sent(tmp_path):
    base = load_template("skillmix/judge")
    folder = tmp_path / "p" / "skillmix"
    folder.mkdir(parents=True)
    path = folder / "judge.yaml"

    def version_of(text: str) -> str:
        path.write_text(text)
        return load_template("skillmix/judge", tmp_path / "p").version

    assert version_of(base.text) == base.version
    assert version_of(base.text.replace("Skill-Mix judge, table variant", "The table judge")) == base.version
    assert version_of(base.text.replace("Explanation: the text", "Explanation: this text")) == base.version
    assert version_of(base.text.replace("You are grading", "Please grade")) != base.version
    assert version_of(base.text.replace("variables: [skills, topic, k, sentence_limit, text]",
                                        "variables: [skills, topic, k, sentence_limit, text, extra]")) != base.version
    assert version_of(base.text.replace("variables: [skills, topic, k, sentence_limit, text]",
                                        "variables: [text, skills, topic, k, sentence_limit]")) == base.version
    assert base.version.startswith("b3:") and base.legacy_version.startswith("b2:")


def test_a_template_with_a_system_text_changes_version_with_it(tmp_path):
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "t.yaml"
    path.write_text("variables: [x]\nsystem: Be brief.\nprompt: Say {{ x }}.\n")
    first = load_template("d/t", tmp_path).version
    path.write_text("variables: [x]\nsystem: Be long.\nprompt: Say {{ x }}.\n")
    assert load_template("d/t", tmp_path).version != first
    path.write_text("variables: [x]\nsystem: Be brief.\nturns: ['Say {{ x }}.']\n")  # the same messages
    assert load_template("d/t", tmp_path).version == first


# ---- scaffolding stays in tests ----------------------------------------------------------------------
class SpyProvider(Provider):
    """A non-fake provider that records what it was sent."""

    provider = "openai"

    def __init__(self):
        super().__init__("spy")
        self.requests = []

    async def _chat(self, request):
        self.requests.append(request)
        return ChatResult(texts=["a reply"], input_tokens=1, output_tokens=2)


def test_fake_replies_are_never_rendered_for_a_real_model(store, tmp_path):
    (tmp_path / "d").mkdir()
    # a scripted reply that cannot render: a real call must not even try
    (tmp_path / "d" / "t.yaml").write_text("variables: [x]\nprompt: Say {{ x }}.\nfake_reply: '{{ x.missing.deeper }}'\n")
    spy = SpyProvider()
    register_provider("openai:spy", spy)
    run_id = store.create_run("demo", {})
    ctx = RunContext(store=store, run_id=run_id, config={}, prompts_dir=str(tmp_path))
    reply = asyncio.run(call_template(ctx, item_id=None, role="r", template="d/t", values={"x": "hi"},
                                      model="openai:spy"))
    assert reply.text == "a reply" and not reply.cached
    assert spy.requests[0].meta == {} and spy.requests[0].messages[-1]["content"] == "Say hi."
    with pytest.raises(Exception, match="fake reply 0"):  # the fake provider does render it
        asyncio.run(call_template(ctx, item_id=None, role="r", template="d/t", values={"x": "hi"}, model="fake"))


# ---- runs from before b3 -----------------------------------------------------------------------------
def make_legacy(store: Store, run_id: str) -> None:
    """Turn a run into what the release before this change left: b2 versions, no recorded prompts."""
    store.db.execute("delete from run_prompts where run_id = ?", [run_id])
    store.db.execute("update runs set prompts_dir = null where id = ?", [run_id])


@pytest.fixture
def legacy_run(tmp_path, cli_run, db_path, monkeypatch):
    from skillweave.agents import llm, run_prompts

    folder = user_folder(tmp_path / "mine", "skillmix/student")
    for module in (llm, run_prompts):  # b2 versions, as before b3
        monkeypatch.setattr(module, "load_pins", lambda store, run_id, record=True: ({}, "b2"))
    code, _, err = cli_run("--prompts-dir", str(folder), *SKILLMIX)
    assert code == 3, err  # the judge fails: exit 3
    monkeypatch.undo()
    store = Store(db_path)
    run = store.get_run("latest")
    make_legacy(store, run["id"])
    judge_back(store, run)
    return store, run, folder


def test_a_b2_run_resumes_in_the_b2_scheme_without_new_student_calls(legacy_run, cli_run):
    store, run, folder = legacy_run
    legacy = load_template("skillmix/student", folder).legacy_version
    assert versions(store, "student") == {legacy}
    calls = store.db["llm_calls"].count_where("role = 'student'")
    code, _, err = cli_run("--prompts-dir", str(folder), "resume", run["id"], "--retry-failed")
    assert code == 0, err
    assert store.db["llm_calls"].count_where("role = 'student'") == calls
    assert {v[:3] for v in versions(store, "judge")} == {"b2:"}  # new calls stay in the run's scheme
    assert store.get_run(run["id"])["prompts_dir"] == str(folder.resolve())  # recorded from now on


def test_a_b2_run_resumed_with_the_wrong_templates_names_them(legacy_run, cli_run):
    store, run, folder = legacy_run
    legacy = load_template("skillmix/student", folder).legacy_version
    packaged = load_template("skillmix/student").legacy_version
    code, _, err = cli_run("resume", run["id"], "--retry-failed")  # forgot the --prompts-dir it was made with
    assert code == 2 and f"template 'skillmix/student' was {legacy}, is now {packaged}" in err
    assert "stored before prompt folders were recorded" in err and err.count("\n") == 1


# ---- a store written by the release before b3 ----------------------------------------------------------
FIXTURE = Path(__file__).parent / "fixtures" / "legacy_b2_run"


@pytest.fixture
def release_store(tmp_path):
    import gzip

    db = tmp_path / "legacy.db"
    db.write_bytes(gzip.decompress((FIXTURE / "skillmix.db.gz").read_bytes()))
    folder = tmp_path / "prompts"
    shutil.copytree(FIXTURE / "prompts", folder)
    store = Store(db)  # migrates the old file
    run = store.get_run("latest")
    assert run["prompts_dir"] is None and {v[:3] for v in versions(store, "student")} == {"b2:"}
    judge_back(store, run)
    return store, run, folder


def test_a_run_stored_by_the_previous_release_resumes_with_its_replies(release_store, cli_run):
    store, run, folder = release_store
    student = versions(store, "student")
    judge = load_template("skillmix/judge", folder).legacy_version
    assert student == {load_template("skillmix/student", folder).legacy_version}
    code, _, err = cli_run("--prompts-dir", str(folder), "resume", run["id"], "--retry-failed", db=store.path)
    assert code == 0, err
    assert store.db["llm_calls"].count_where("role = 'student'") == 4 and versions(store, "student") == student
    assert store.db["llm_calls"].count_where("role = 'judge' and error is null and prompt_version = ?", [judge]) == 2
    assert {i["status"] for i in store.items(run["id"])} == {"done"}
    code, out, err = cli_run("report", run["id"], db=store.path)
    assert code == 0 and "1.000" in out, err


def test_a_run_stored_by_the_previous_release_names_templates_it_did_not_use(release_store, cli_run):
    store, run, folder = release_store
    judge = load_template("skillmix/judge", folder).legacy_version
    before_dump = dump(store)
    code, _, err = cli_run("resume", run["id"], "--retry-failed", db=store.path)  # without its --prompts-dir
    assert code == 2 and f"template 'skillmix/judge' was {judge}, is now " in err and err.count("\n") == 1
    assert dump(store) == before_dump  # nothing was called or recorded


def test_a_template_edited_while_the_run_goes_is_refused_at_first_use(store, tmp_path):
    from skillweave.agents.run_prompts import PromptsChangedError

    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "t.yaml"
    path.write_text("variables: [x]\nprompt: Say {{ x }}.\n")
    run_id = store.create_run("demo", {})
    ctx = RunContext(store=store, run_id=run_id, config={}, prompts_dir=str(tmp_path))
    first = ctx.template("d/t").version
    stat = path.stat()
    path.write_text("variables: [x]\nprompt: Shout {{ x }}.\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    with pytest.raises(PromptsChangedError, match=f"template 'd/t' was {first}, is now b3:"):
        ctx.template("d/t")
    later = RunContext(store=store, run_id=run_id, config={}, prompts_dir=str(tmp_path), allow_changed_prompts=True)
    second = later.template("d/t").version  # pins loaded from the store, then replaced
    assert second != first
    assert [r["version"] for r in store.db["run_prompts"].rows_where("run_id = ?", [run_id])] == [second]
