"""A reply with a python tool call, through the HTTP API: fenced blocks in `content` for any
OpenAI client, typed parts in `chatforge_parts` for the web page, both streamed and not."""

import json

import httpx
import pytest
import torch

from chatforge.infer.engine import Engine
from chatforge.infer.tools import default_tools
from chatforge.serve.app import create_app


class ScriptedModel(torch.nn.Module):
    """Writes text, a python call, and (after the engine's forced tool output) more text."""

    def __init__(self, vocab_size, before, after, output_end):
        super().__init__()
        from chatforge.model import GPTConfig

        self.config = GPTConfig.from_preset("d2", vocab_size=vocab_size, seq_len=512)
        self.before, self.after, self.output_end = before, after, output_end
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def new_kv_cache(self, batch_size, max_len, dtype=None):
        from chatforge.model import KVCache

        self.inputs = []
        return KVCache(1, batch_size, 1, max_len, 2, "cpu", torch.float32)

    def forward(self, idx, kv_cache=None, attention_mask=None):
        first = kv_cache.pos == 0
        kv_cache.pos += idx.shape[1]
        if not first:
            self.inputs.append(int(idx[0, -1]))
        if self.output_end in self.inputs:
            nxt = self.after[len(self.inputs) - 1 - self.inputs.index(self.output_end)]
        else:
            nxt = self.before[min(len(self.inputs), len(self.before) - 1)]
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.config.vocab_size)
        logits[:, -1, nxt] = 10.0
        return logits


@pytest.fixture(scope="module")
def url(tiny_tokenizer, request):
    tok = tiny_tokenizer
    sid = tok.special_id
    before = tok.encode("Let me compute. ") + [sid("python_start")] + tok.encode("print(6*7)") + [sid("python_end")]
    after = tok.encode("So it is 42.") + [sid("assistant_end")]
    engine = Engine(ScriptedModel(tok.vocab_size, before, after, sid("output_end")), tok, default_tools())
    live = request.getfixturevalue("live_server").__class__(create_app(engine, "scripted", max_batch=1))
    yield live.url
    live.stop()


def test_tool_call_reply(url):
    body = {"model": "scripted", "messages": [{"role": "user", "content": "6*7?"}], "temperature": 0}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    msg = r["choices"][0]["message"]
    assert msg["content"] == "Let me compute. \n```python\nprint(6*7)\n```\n\n```output\n42\n\n```\nSo it is 42."
    assert msg["chatforge_parts"] == [
        {"type": "text", "text": "Let me compute. "}, {"type": "python", "text": "print(6*7)"},
        {"type": "python_output", "text": "42\n"}, {"type": "text", "text": "So it is 42."}]
    assert r["choices"][0]["finish_reason"] == "stop"

    content, parts = "", []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body | {"stream": True}, timeout=60) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                content += delta.get("content") or ""
                for p in delta.get("chatforge_parts") or ([{"type": "text", "text": delta["content"]}]
                                                          if delta.get("content") else []):
                    if parts and parts[-1]["type"] == p["type"]:
                        parts[-1]["text"] += p["text"]
                    else:
                        parts.append(dict(p))
    assert content == msg["content"] and parts == msg["chatforge_parts"]

    # the reply sent back as history renders to the same tokens the model wrote
    follow = body | {"messages": body["messages"] + [{"role": "assistant", "content": "x",
                                                      "chatforge_parts": msg["chatforge_parts"]},
                                                     {"role": "user", "content": "thanks"}]}
    assert httpx.post(url + "/v1/chat/completions", json=follow, timeout=60).status_code == 200
