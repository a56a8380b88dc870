"""The server's guards (chatforge/serve/security.py) against a live server on 127.0.0.1."""

import argparse
import asyncio
import subprocess
import sys
import time

import httpx
import openai
import pytest

from chatforge.common import ChatforgeError
from chatforge.serve.security import Policy, is_loopback

MODEL = "guarded"
KEY = "sk-test-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def guarded(live_server, tiny_tokenizer, make_random_model):
    from chatforge.infer.engine import Engine
    from chatforge.serve.app import create_app

    policy = Policy(api_key=KEY, max_body_bytes=4096, max_concurrent=2, cors_origins=("https://ok.example",))
    engine = Engine(make_random_model(tiny_tokenizer), tiny_tokenizer)
    srv = live_server.__class__(create_app(engine, MODEL, max_batch=8, policy=policy, max_tokens_cap=64))
    srv.policy = policy
    yield srv
    srv.stop()


def post(srv, body, **kw):
    headers = {**AUTH, **kw.pop("headers", {})}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers=headers, timeout=60, **kw)


def test_api_key(guarded):
    body = {"model": MODEL, "messages": HI, "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(guarded.url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(guarded.url + "/v1/models").status_code == 401
    c = openai.OpenAI(base_url=guarded.url + "/v1", api_key=KEY, max_retries=0)
    assert c.chat.completions.create(model=MODEL, messages=HI, max_tokens=2).usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.url + "/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(guarded.url + "/health").status_code == 200  # the page and health stay open
    assert httpx.get(guarded.url + "/").status_code == 200


def test_non_loopback_bind_needs_a_key(monkeypatch, tmp_path):
    from chatforge.serve.cli import register

    monkeypatch.delenv("CHATFORGE_API_KEY", raising=False)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        args = parser.parse_args(["serve", str(tmp_path), "--host", host])
        with pytest.raises(ChatforgeError, match="--api-key"):
            args.func(args)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_body_size_cap(guarded):
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}], "max_tokens": 2}
    r = post(guarded, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the cap applies while the body arrives
        yield b'{"model": "guarded", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'
    r = httpx.post(guarded.url + "/v1/chat/completions", content=chunks(), headers=AUTH, timeout=60)
    assert r.status_code == 413
    assert post(guarded, {"model": MODEL, "messages": HI, "max_tokens": 2}).status_code == 200


def test_max_tokens_cap(guarded):
    r = post(guarded, {"model": MODEL, "messages": HI, "max_tokens": 65})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = post(guarded, {"model": MODEL, "messages": HI, "max_tokens": 64})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 64
    r = post(guarded, {"model": MODEL, "messages": HI})  # the default is capped too
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 64


def test_concurrency_cap_429_then_recovers(guarded):
    async def stream(client):
        body = {"model": MODEL, "messages": HI, "max_tokens": 64, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
            return r.status_code, r.headers.get("retry-after"), "".join([x async for x in r.aiter_text()])

    async def main():
        async with httpx.AsyncClient(base_url=guarded.url, timeout=120) as client:
            return await asyncio.gather(*(stream(client) for _ in range(6)))

    results = asyncio.run(main())
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(ok) >= 2 and len(refused) >= 1 and len(ok) + len(refused) == 6
    assert all(r[1] == "1" and "rate_limit_exceeded" in r[2] for r in refused)
    assert all(r[2].rstrip().endswith("data: [DONE]") for r in ok)
    for _ in range(100):
        if guarded.policy.in_flight == 0:
            break
        time.sleep(0.05)
    assert guarded.policy.in_flight == 0
    assert post(guarded, {"model": MODEL, "messages": HI, "max_tokens": 2}).status_code == 200


def test_host_and_origin(guarded):
    body = {"model": MODEL, "messages": HI, "max_tokens": 2}
    r = post(guarded, body, headers={"Host": "evil.example"})  # DNS rebinding
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_host"
    r = post(guarded, body, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_origin"
    r = post(guarded, body, headers={"Origin": guarded.url})  # the web UI: same origin
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = post(guarded, body, headers={"Origin": "https://ok.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ok.example"
    pre = httpx.options(guarded.url + "/v1/chat/completions", headers={
        "Origin": "https://ok.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 204 and "authorization" in pre.headers["access-control-allow-headers"]
    assert guarded.policy.refused["bad_origin"] >= 1


def test_serve_prints_isolation_and_security(tmp_path, tiny_tokenizer, make_random_model):
    """`chatforge serve` says at start-up which sandbox the python tool has and which guards apply."""
    import socket

    from chatforge.model import save_run

    save_run(tmp_path / "run", make_random_model(tiny_tokenizer, seq_len=256), tiny_tokenizer, kind="sft")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "chatforge", "serve", str(tmp_path / "run"), "--port", str(port),
                             "--device", "cpu", "--api-key", KEY], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("python tool: "), lines
        assert lines[2].startswith("security: API key required"), lines
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_web_page_asks_for_the_api_key(browser, guarded):
    """The page gets 401 from /v1, asks for the key once, keeps it, and chats with it."""
    page = browser.new_page()
    asked, errors = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept(KEY)
    page.on("dialog", answer)
    page.goto(guarded.url + "/")
    page.wait_for_function(f"document.getElementById('model-info').textContent.includes('{MODEL}')")
    assert len(asked) == 1 and "API key" in asked[0]
    assert page.evaluate("localStorage.getItem('chatforge-api-key')") == KEY
    page.eval_on_selector("#max-tokens", "el => { el.value = 16; el.dispatchEvent(new Event('change')); }")
    page.fill("#input", "Hello with a key")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant")
    page.wait_for_function("!document.querySelector('.msg.streaming') && !document.getElementById('send').disabled")
    reply = page.evaluate("""() => { const s = JSON.parse(localStorage.getItem('chatforge.chat.v1'));
                             return s.convs[s.current].messages[1].parts.map(p => p.text).join(''); }""")
    assert reply and "API key" not in reply and len(asked) == 1 and not errors
    page.close()
