"""MATH² exports carry what review produced; the paper cuts and safety holes of issue 21 stay fixed: sandboxed
templates, LIKE-escaped id prefixes, one reviewer rule for CLI and web page, review hints, lineage by prefix."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient
from test_math2 import _fresh_providers, items, make_store, script, start  # noqa: F401  (autouse fixture)

from skillweave.agents.review import default_reviewer_name, make_decision, resolve_item_id
from skillweave.decisions import submit_decision
from skillweave.errors import NotFound
from skillweave.export import ExportFilters, export_runs

TOKEN = "test-token-0123456789"


@pytest.fixture
def paused(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, summary = start(store, bank, n=2, reviewer="human")
    assert summary.paused == 2
    return store, run_id


def test_math2_default_export_takes_accepted_items_with_the_reviewed_solution(paused, tmp_path):
    store, run_id = paused
    first, second = (i["id"] for i in items(store, run_id))
    solution = store.get_item(first)["payload"]["solution"]
    submit_decision(store, first, make_decision("approve", reviewer="ann"))
    submit_decision(store, second, make_decision("edit", reviewer="bob", changes={
        "solution": "Six sevens: 6 * 7 = 42, so \\boxed{42}.", "answer": "42"}))
    assert {i["status"] for i in items(store, run_id)} == {"accepted"}
    summary = export_runs(store, [run_id], tmp_path / "m.jsonl", shape="prompt-completion")
    rows = {r["item_id"]: r for r in map(json.loads, (tmp_path / "m.jsonl").read_text().splitlines())}
    assert summary["rows"] == 2 and set(rows) == {first, second}
    assert rows[first]["completion"] == solution and rows[first]["reviewed_by"] == "ann"
    assert rows[first]["review_changes"] is None
    edited = rows[second]
    assert edited["completion"] == "Six sevens: 6 * 7 = 42, so \\boxed{42}." and edited["answer"] == "42"
    assert edited["reviewed_by"] == "bob" and edited["prompt"] == store.get_item(second)["payload"]["question"]
    assert json.loads(edited["review_changes"])["solution"]["after"].startswith("Six sevens")
    assert len(edited["completion"]) > len(edited["answer"])  # never the bare final answer


def test_math2_items_waiting_for_review_are_not_exported(paused, tmp_path):
    from skillweave.errors import UsageError

    store, run_id = paused
    with pytest.raises(UsageError, match="status review"):
        export_runs(store, [run_id], tmp_path / "m.jsonl")
    export_runs(store, [run_id], tmp_path / "all.jsonl", filters=ExportFilters(status=None))


def test_blank_reviewer_on_the_page_is_stored_as_the_cli_stores_it(paused, monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_REVIEWER", "the-login")
    store, run_id = paused
    from skillweave.web import create_app

    client = TestClient(create_app(store, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"},
                        follow_redirects=False)
    item_id = items(store, run_id)[0]["id"]
    assert client.post(f"/item/{item_id}/decide", data={"action": "approve", "csrf": TOKEN,
                                                        "reviewer": "   "}).status_code == 303
    (review,) = store.db["reviews"].rows_where("item_id = ?", [item_id])
    assert review["reviewer"] == default_reviewer_name() == "the-login"
    assert make_decision("approve", reviewer="  ")["reviewer"] == "the-login"


def test_like_wildcards_in_an_id_prefix_match_only_themselves(paused, cli_run, db_path):
    store, run_id = paused
    for prefix in ("______", "%%%%%%", "_" * 19 + "%"):
        with pytest.raises(NotFound):
            resolve_item_id(store, prefix)
    code, _, err = cli_run("review", "approve", "______", db=store.path)
    assert code == 2 and err.startswith("Error: no item '______'")
    assert {i["status"] for i in items(store, run_id)} == {"review"}
    item_id = items(store, run_id)[0]["id"]
    assert resolve_item_id(store, item_id[:8]) == item_id


def test_items_lineage_accepts_an_id_prefix(paused, cli_run):
    store, run_id = paused
    item_id = items(store, run_id)[0]["id"]
    code, out, err = cli_run("items", "lineage", item_id[:7], "--json", db=store.path)
    assert code == 0, err
    assert json.loads(out)["item"]["id"] == item_id


def test_a_paused_math2_run_prints_the_review_commands(tmp_path, cli_run):
    from test_math2 import make_store as _make

    store, bank = _make(tmp_path)
    code, _, err = cli_run("run", "math2", "--bank", bank, "--model", "fake", "--n", "1", "--reviewer", "human",
                           db=store.path)
    assert code == 4, err  # paused for review: docs/large-runs.md
    assert "paused for review" in err and "skillweave review list --run math2-" in err
    assert "skillweave review serve" in err


def test_prompts_dir_templates_are_sandboxed(tmp_path, cli_run):
    marker = tmp_path / "pwned"
    folder = tmp_path / "p" / "skillmix"
    folder.mkdir(parents=True)
    (folder / "student.yaml").write_text(
        "description: hostile\nvariables: [topic]\n"
        f"prompt: \"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}} {{{{ topic }}}}\"\n")
    code, out, err = cli_run("--prompts-dir", str(tmp_path / "p"), "prompts", "render", "skillmix/student",
                             "--var", "topic=x", db=str(tmp_path / "x.db"))
    assert code == 2 and err.startswith("Error: ") and "unsafe" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_review_page_renders_latex_as_mathml_without_scripts(tmp_path):
    from skillweave.web import create_app
    from skillweave.web.mathtext import render_math

    store, bank = make_store(tmp_path)
    script("fake", {"qgen": r"Question: Compute $\frac{84}{2}$ and say $\text{<img src=x onerror=alert(1)>}$."})
    run_id, summary = start(store, bank, n=1, reviewer="human")
    assert summary.paused == 1
    client = TestClient(create_app(store, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    page = client.get(f"/item/{items(store, run_id)[0]['id']}")
    assert "<mfrac><mrow><mn>84</mn></mrow><mrow><mn>2</mn></mrow></mfrac>" in page.text
    assert "<img src=x" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "<script" not in page.text and "cdn" not in page.text.lower()
    boxed = str(render_math(r"so \boxed{42}, costs $5 and $6"))
    assert '<menclose notation="box"><mrow><mn>42</mn></mrow></menclose>' in boxed and "costs $5 and $6" in boxed
    hostile = str(render_math(r"$\href{javascript:alert(1)}{y}$ \(a < b\) <b>"))
    assert "javascript" not in hostile and "href" not in hostile and "&lt;b&gt;" in hostile
    assert "<mo>&lt;</mo>" in hostile


@pytest.mark.browser
@pytest.mark.skipif(not (__import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")),
                    reason="Debian's chromium is not installed (`apt-get install -y chromium`)")
def test_chromium_draws_the_mathml_under_the_page_policy(tmp_path):
    """Chromium lays the server-made MathML out as math (numerator above denominator) with no policy violation."""
    import shutil
    import threading
    import time

    import uvicorn
    from playwright.sync_api import sync_playwright
    from test_web_review import _free_port

    from skillweave.web import create_app

    store, bank = make_store(tmp_path)
    script("fake", {"qgen": r"Question: Compute $\frac{84}{2}$, then state \boxed{42}."})
    run_id, summary = start(store, bank, n=1, reviewer="human")
    assert summary.paused == 1
    item_id = items(store, run_id)[0]["id"]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, token=TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            page.goto(f"http://127.0.0.1:{port}/item/{item_id}?token={TOKEN}")
            fraction = page.locator("#preview-question mfrac").first
            numerator, denominator = fraction.locator(":scope > *").nth(0), fraction.locator(":scope > *").nth(1)
            top, bottom = numerator.bounding_box(), denominator.bounding_box()
            assert top and bottom and top["y"] + top["height"] <= bottom["y"] + 1  # stacked, not inline text
            assert page.locator("#preview-question menclose").count() == 1
            assert not [m for m in console if "Content Security Policy" in m]
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
