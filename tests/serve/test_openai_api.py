"""The official `openai` client, as a user would use it, against a live server on 127.0.0.1."""

import asyncio
import json

import httpx
import openai
import pytest

MODEL = "chatforge-test"
HI = [{"role": "user", "content": "Hello! How are you?"}]


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_health(client, live_server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(live_server.url + "/health").json()["status"] == "ok"


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=0)
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12
    # greedy is deterministic; a seed makes sampling reproducible
    again = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == c.message.content
    s1, s2 = (client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=1, seed=5,
                                             top_p=0.95) for _ in range(2))
    assert s1.choices[0].message.content == s2.choices[0].message.content


def test_streaming_matches_non_streaming(client):
    full = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20 and len([c for c in chunks if c.choices]) > 3


def test_raw_sse_ends_with_done(live_server):
    body = {"model": MODEL, "messages": HI, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)


def test_n_samples(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10, n=3, temperature=1.0, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage.completion_tokens == 30
    stream = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10, n=2, stream=True, seed=1)
    got = {0: "", 1: ""}
    for ch in stream:
        for c in ch.choices:
            got[c.index] += c.delta.content or ""
    assert got[0] and got[1] and got[0] != got[1]


def test_stop_strings(client):
    full = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=30, temperature=0).choices[0].message.content
    stop = full[10:13]
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=30, temperature=0, stop=[stop, "\x00never"])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == full[:full.index(stop)]
    text = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model=MODEL, messages=HI, max_tokens=30, temperature=0, stop=stop, stream=True) if ch.choices)
    assert text == full[:full.index(stop)]


def test_completions_endpoint(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=1)
    assert r.choices[0].text and r.usage.completion_tokens == 8
    assert len(r.choices[0].logprobs.token_logprobs) == 8 and all(lp <= 0 for lp in r.choices[0].logprobs.token_logprobs)
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=6, temperature=0, logprobs=True)
    lps = r.choices[0].logprobs.content
    assert len(lps) == 6 and all(e.logprob <= 0 for e in lps)


@pytest.mark.parametrize("kwargs, status, code", [
    (dict(model="no-such-model"), 404, "model_not_found"),
    (dict(temperature=5), 400, "invalid_value"),
    (dict(top_p=0), 400, "invalid_value"),
    (dict(max_tokens=0), 400, "invalid_value"),
    (dict(n=0), 400, "invalid_value"),
    (dict(messages=[{"role": "wizard", "content": "hi"}]), 400, None),
    (dict(messages=[]), 400, None),
    (dict(messages=[{"role": "user", "content": "hello world " * 3000}]), 400, "context_length_exceeded"),
])
def test_errors_are_openai_style_4xx(client, kwargs, status, code):
    args = dict(model=MODEL, messages=HI, max_tokens=5) | kwargs
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**args)
    assert e.value.status_code == status
    err = e.value.body
    assert isinstance(err["message"], str) and err["type"] == "invalid_request_error"
    if code:
        assert err["code"] == code
    # and the server keeps serving
    assert client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2).choices[0].message.content


def test_malformed_json_and_wrong_types(live_server):
    u = live_server.url + "/v1/chat/completions"
    for raw in [b"{not json", b"[1, 2]", json.dumps({"model": MODEL, "messages": HI, "temperature": "hot"}).encode(),
                json.dumps({"model": MODEL, "messages": HI, "stream": "yes"}).encode(),
                json.dumps({"model": MODEL, "messages": HI, "stop": [1, 2]}).encode(),
                b"\xff\xfe"]:
        r = httpx.post(u, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, raw
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(live_server.url + "/v1/nothing").status_code == 404
    assert httpx.get(u).status_code == 405


def test_32_concurrent_streaming_clients(live_server):
    async def one(client, i):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"client {i} says hi"}],
                "max_tokens": 24, "temperature": 0, "stream": True}
        text, done, finish = "", False, None
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    for c in json.loads(line[6:])["choices"]:
                        text += c["delta"].get("content") or ""
                        finish = c["finish_reason"] or finish
        return text, done, finish

    async def main():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    results = asyncio.run(main())
    assert all(done and finish == "length" and text for text, done, finish in results)
    # each stream equals that prompt's reply computed alone
    for i in (0, 17, 31):
        alone = httpx.post(live_server.url + "/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": f"client {i} says hi"}],
            "max_tokens": 24, "temperature": 0}).json()
        assert alone["choices"][0]["message"]["content"] == results[i][0]


def _wait_idle(url):
    import time
    t = time.monotonic()
    while time.monotonic() - t < 10:
        h = httpx.get(url + "/health").json()
        if h["busy_rows"] == 0:
            return h
        time.sleep(0.05)
    raise AssertionError("the abandoned generation kept running")


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_generation(live_server, stream):
    before = httpx.get(live_server.url + "/health").json()["cancelled_rows"]
    body = {"model": MODEL, "messages": HI, "max_tokens": 4000, "stream": stream}
    if stream:
        with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=30) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 5:
                    break  # leave mid-stream
    else:
        with pytest.raises(httpx.ReadTimeout):  # give up waiting for the whole reply
            httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=0.7)
    assert _wait_idle(live_server.url)["cancelled_rows"] == before + 1


def test_serve_command(tmp_path, tiny_tokenizer, make_random_model):
    """`chatforge serve RUN --port P` end to end in a subprocess."""
    import socket
    import subprocess
    import sys
    import time

    from chatforge.model import save_run

    save_run(tmp_path / "myrun", make_random_model(tiny_tokenizer, seq_len=256), tiny_tokenizer, kind="sft")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "chatforge", "serve", str(tmp_path / "myrun"), "--port", str(port),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        assert [m.id for m in c.models.list().data] == ["chatforge-myrun"]
        r = c.chat.completions.create(model="chatforge-myrun", messages=HI, max_tokens=3)
        assert r.usage.completion_tokens <= 3
        assert "<title>chatforge</title>" in httpx.get(url + "/").text
        assert httpx.get(url + "/static/app.js").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_late_request_joins_the_running_batch(live_server):
    """A short request arriving during a long generation is served within it, not after it."""
    import threading
    import time

    before = httpx.get(live_server.url + "/health").json()["joined"]
    long_done = {}

    def long():
        httpx.post(live_server.url + "/v1/chat/completions", timeout=120, json={
            "model": MODEL, "messages": [{"role": "user", "content": "a long one " * 8}], "max_tokens": 1500})
        long_done["t"] = time.monotonic()

    th = threading.Thread(target=long)
    th.start()
    while httpx.get(live_server.url + "/health").json()["busy_rows"] == 0:
        time.sleep(0.01)
    time.sleep(0.2)
    short = httpx.post(live_server.url + "/v1/chat/completions", timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": "short"}], "max_tokens": 5, "temperature": 0}).json()
    t_short = time.monotonic()
    th.join()
    assert short["usage"]["completion_tokens"] == 5
    assert t_short < long_done["t"], "the short request waited for the long one to finish"
    assert httpx.get(live_server.url + "/health").json()["joined"] > before
    alone = httpx.post(live_server.url + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "short"}], "max_tokens": 5, "temperature": 0}).json()
    assert alone["choices"][0]["message"]["content"] == short["choices"][0]["message"]["content"]
