"""The review web page: token and CSRF checks, escaping of generated text, and a real browser (Debian's headless
Chromium driven by Playwright) approving and editing items, checked against the store and the resumed threads."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import pytest
from starlette.testclient import TestClient
from test_math2 import _fresh_providers, items, make_store, script, start  # noqa: F401  (autouse fixture)
from test_review import thread_state

from skillweave.web import create_app

TOKEN = "test-token-0123456789"
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def paused(tmp_path):
    store, bank = make_store(tmp_path)
    script("fake", {"qgen": f"Question: What is 6 * 7? {EVIL}"})
    run_id, summary = start(store, bank, n=2, reviewer="human")
    assert summary.paused == 2
    return store, run_id


def test_token_is_required_and_moved_into_a_cookie(paused):
    store, _ = paused
    client = TestClient(create_app(store, token=TOKEN), follow_redirects=False)
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    first = client.get(f"/?token={TOKEN}")
    assert first.status_code == 303 and "token" not in first.headers["location"]
    assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    page = client.get("/")  # the cookie now authorises
    assert page.status_code == 200 and "Waiting for review (2)" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' forbids scripts


def test_generated_text_is_escaped(paused):
    store, _ = paused
    client = TestClient(create_app(store, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    item_id = items(store, store.list_runs(1)[0]["id"])[0]["id"]
    for html in (client.get("/").text, client.get(f"/item/{item_id}").text):
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_posting_needs_the_csrf_field_and_a_valid_decision(paused):
    store, _ = paused
    client = TestClient(create_app(store, token=TOKEN), follow_redirects=False)
    client.cookies.set("skillweave_review", TOKEN)
    item_id = items(store, store.list_runs(1)[0]["id"])[0]["id"]
    assert client.post(f"/item/{item_id}/decide", data={"action": "approve"}).status_code == 403
    bad = client.post(f"/item/{item_id}/decide", data={"action": "reject", "csrf": TOKEN, "reason": ""})
    assert bad.status_code == 400 and "needs a reason" in bad.text
    assert store.get_item(item_id)["status"] == "review"
    ok = client.post(f"/item/{item_id}/decide", data={"action": "reject", "csrf": TOKEN, "reason": "bad <b>"})
    assert ok.status_code == 303 and store.get_item(item_id)["status"] == "dropped"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make browser` or "
                                              "`apt-get install -y chromium`); the browser test needs it")
def test_browser_approves_and_edits_through_the_page(paused):
    import uvicorn
    from playwright.sync_api import sync_playwright

    store, run_id = paused
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, token=TOKEN, default_reviewer="web-tester"),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    base = f"http://127.0.0.1:{port}"
    first, second = (i["id"] for i in items(store, run_id))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"{base}/?token={TOKEN}")
            assert page.url == f"{base}/"  # token moved into the cookie
            assert page.locator("#queue .item-link").count() == 2
            alerts: list[str] = []
            page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))

            page.click(f"a[href='/item/{first}']")
            assert "What is 6 * 7?" in page.locator("#field-question").input_value()
            assert EVIL in page.locator("#field-question").input_value()  # shown verbatim, as text
            page.click("#approve")
            page.wait_for_url(f"{base}/?notice=*")
            assert f"approve: item {first} is now accepted" in page.locator("#notice").inner_text()

            page.click(f"a[href='/item/{second}']")
            page.fill("#reason", "typing a reason")
            page.press("#reason", "Enter")  # Enter must not submit a decision (the default button is disabled)
            page.wait_for_timeout(300)
            assert page.url.endswith(f"/item/{second}") and store.get_item(second)["status"] == "review"
            page.fill("#field-question", "What is 6 * 8?")
            page.fill("#field-answer", "48")
            page.fill("#reason", "changed the numbers")
            page.click("#edit")
            page.wait_for_url(f"{base}/?notice=*")
            assert page.locator("#empty").is_visible()
            assert alerts == []  # no injected script ever ran
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    assert store.get_item(first)["status"] == "accepted"
    edited = store.get_item(second)
    assert edited["status"] == "accepted" and edited["payload"]["question"] == "What is 6 * 8?"
    assert edited["payload"]["answer"] == "48"
    (review,) = store.db["reviews"].rows_where("item_id = ?", [second])
    changes = json.loads(review["changes"])
    assert review["reviewer"] == "web-tester" and review["decision"] == "edit"
    assert changes["answer"] == {"before": "42", "after": "48"} and changes["question"]["after"] == "What is 6 * 8?"
    assert "solution" not in changes  # untouched fields are not recorded as edits
    for item_id in (first, second):
        state = thread_state(store, run_id, store.get_item(item_id)["payload"]["thread_id"])
        assert not state.interrupts and not state.next and state.values["status"] == "accepted"
    assert store.get_run(run_id)["status"] == "done"


def test_a_decided_item_shows_its_current_values(paused):
    store, run_id = paused
    client = TestClient(create_app(store, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"},
                        follow_redirects=False)
    item_id = items(store, run_id)[0]["id"]
    response = client.post(f"/item/{item_id}/decide", data={
        "action": "edit", "csrf": TOKEN, "answer": "41", "reviewer": "zoe",
        "question": store.get_item(item_id)["payload"]["question"]})
    assert response.status_code == 303
    page = client.get(f"/item/{item_id}").text
    assert "not waiting for review" in page and "<h3>answer</h3><div class=\"text\">41</div>" in page
    assert 'id="decision"' not in page and "zoe" in page
