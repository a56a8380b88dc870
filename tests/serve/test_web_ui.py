"""The web chat page in a real headless browser (Debian chromium driven by Playwright).

Loads /, sends a message and sees the reply stream in, stops a long generation, reloads and finds
the conversation again (localStorage), renders tool calls as collapsible blocks. Screenshots go to
test-artifacts/ (git-ignored).
"""

import json
import time

import httpx
import pytest

from chatforge.common import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"


def set_value(page, selector, value):
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); "
                                    "el.dispatchEvent(new Event('change')); }", str(value))


def paced(generate, seconds):
    """The engine's generate, sleeping after each decode step: a tiny model on a fast machine can
    finish a 60-token reply within one network read, so the page would get it in a few chunks
    (CI once saw 3 renders) and incremental rendering would go unseen."""
    def gen(*args, **kwargs):
        for events in generate(*args, **kwargs):
            yield events
            time.sleep(seconds)
    return gen


def test_web_chat(browser, live_server, monkeypatch):
    monkeypatch.setattr(live_server.engine, "generate", paced(live_server.engine.generate, 0.01))
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server.url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('chatforge-test')")

    # 1. a message gets a streamed reply, identical to the API's greedy reply
    sent = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions") else None)
    set_value(page, "#system-prompt", "You are a test.")
    set_value(page, "#temperature", 0)
    set_value(page, "#max-tokens", 60)
    page.evaluate("""() => { window.__updates = 0; new MutationObserver(() => window.__updates++)
                     .observe(document.getElementById('messages'), {childList: true, subtree: true}); }""")
    page.fill("#input", "Hello from the browser")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant")
    page.wait_for_function("!document.querySelector('.msg.streaming') && !document.getElementById('send').disabled")
    reply = page.evaluate("""() => { const s = JSON.parse(localStorage.getItem('chatforge.chat.v1'));
                             return s.convs[s.current].messages[1].parts.map(p => p.text).join(''); }""")
    assert sent[0]["messages"] == [{"role": "system", "content": "You are a test."},
                                   {"role": "user", "content": "Hello from the browser"}]
    assert sent[0]["stream"] is True and sent[0]["temperature"] == 0 and sent[0]["max_tokens"] == 60
    api = httpx.post(live_server.url + "/v1/chat/completions", timeout=60, json={
        "model": "chatforge-test", "messages": sent[0]["messages"],
        "temperature": 0, "max_tokens": 60}).json()["choices"][0]["message"]["content"]
    assert reply == api and reply
    assert page.evaluate("window.__updates") > 3, "the reply was not rendered incrementally"
    page.screenshot(path=str(ARTIFACTS / "web_ui_reply.png"))

    # 2. Stop ends a long generation early, and the server stops generating it
    set_value(page, "#max-tokens", 3000)
    page.fill("#input", "Now tell me a very long story")
    page.press("#input", "Enter")
    page.wait_for_function("(() => { const m = document.querySelectorAll('.msg.assistant'); "
                           "return m.length == 2 && m[1].textContent.length > 40; })()")
    page.click("#stop")
    page.wait_for_selector("text=(stopped)")
    stopped_len = len(page.inner_text(".msg.assistant >> nth=1"))
    t = time.monotonic()
    while httpx.get(live_server.url + "/health").json()["busy_rows"] and time.monotonic() - t < 10:
        time.sleep(0.05)
    assert httpx.get(live_server.url + "/health").json()["busy_rows"] == 0
    time.sleep(0.3)
    assert len(page.inner_text(".msg.assistant >> nth=1")) == stopped_len  # nothing more streamed in

    # 3. after a reload the conversation is still there
    page.reload()
    page.wait_for_function("document.getElementById('model-info').textContent.includes('chatforge-test')")
    assert page.locator("#conversations li").count() == 1
    assert "Hello from the browser" in page.inner_text("#conversations li")
    msgs = page.locator(".msg")
    assert msgs.count() == 4 and "(stopped)" in msgs.nth(3).inner_text()
    assert "Now tell me a very long story" in msgs.nth(2).inner_text()

    # 4. regenerate replaces the last reply; new chat starts empty; the old one is one click away
    set_value(page, "#max-tokens", 20)
    page.click("#regenerate")
    page.wait_for_function("!document.querySelector('.msg.streaming') && !document.getElementById('send').disabled")
    assert page.locator(".msg").count() == 4 and "(stopped)" not in page.locator(".msg").nth(3).inner_text()
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0 and page.locator("#conversations li").count() == 2
    page.locator("#conversations li").nth(1).click()
    assert page.locator(".msg").count() == 4

    # 5. tool calls render as collapsible blocks (a stored conversation with python parts)
    conv = {"id": "tools", "title": "What is 6*7?", "system": "", "messages": [
        {"role": "user", "content": "What is 6*7?"},
        {"role": "assistant", "parts": [{"type": "text", "text": "Let me compute that. "},
                                        {"type": "python", "text": "print(6*7)"},
                                        {"type": "python_output", "text": "42\n"},
                                        {"type": "text", "text": "It is 42."}]}]}
    page.evaluate("""(conv) => { const s = JSON.parse(localStorage.getItem('chatforge.chat.v1'));
                     s.convs[conv.id] = conv; s.order.unshift(conv.id); s.current = conv.id;
                     localStorage.setItem('chatforge.chat.v1', JSON.stringify(s)); }""", conv)
    page.reload()
    page.wait_for_selector("details.tool.python")
    assert page.locator("details.tool").count() == 2
    assert not page.locator("details.tool.python").evaluate("d => d.open")
    page.click("details.tool.python summary")
    page.click("details.tool.python_output summary")
    assert page.locator("details.tool.python pre").inner_text() == "print(6*7)"
    assert page.locator("details.tool.python").evaluate("d => d.open")
    page.screenshot(path=str(ARTIFACTS / "web_ui_tools.png"))
    page.locator("#conversations li", has_text="Hello from the browser").click()
    assert page.locator(".msg").count() == 4
    page.screenshot(path=str(ARTIFACTS / "web_ui.png"))
    assert errors == []
