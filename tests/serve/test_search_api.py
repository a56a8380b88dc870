"""A reply with a search call, through the HTTP API: fenced in `content`, typed in
`chatforge_parts`, and in OpenAI's `tool_calls` shape with the results alongside."""

import json

import httpx
import pytest

from chatforge.infer.engine import Engine
from chatforge.infer.search import build_index
from chatforge.infer.tools import default_tools
from chatforge.serve.app import create_app

from .test_tool_calls_api import ScriptedModel  # writes a tool call, then text after the forced output


@pytest.fixture(scope="module")
def url(tiny_tokenizer, tmp_path_factory, request):
    tok = tiny_tokenizer
    d = tmp_path_factory.mktemp("search")
    (d / "web.jsonl").write_text(json.dumps({"text": "Bianca Gallo lives in Oslo."}) + "\n")
    build_index([d / "web.jsonl"], d / "i.sqlite", quiet=True)
    sid = tok.special_id
    before = [sid("search_start")] + tok.encode("Bianca Gallo") + [sid("search_end")]
    after = tok.encode("She lives in Oslo.") + [sid("assistant_end")]
    engine = Engine(ScriptedModel(tok.vocab_size, before, after, sid("output_end")), tok,
                    default_tools(d / "i.sqlite", tok))
    live = request.getfixturevalue("live_server").__class__(create_app(engine, "scripted", max_batch=1))
    yield live.url
    live.stop()


def test_search_call_reply(url):
    body = {"model": "scripted", "messages": [{"role": "user", "content": "Where does Bianca Gallo live?"}],
            "temperature": 0}
    msg = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]
    assert msg["content"] == "\n```search\nBianca Gallo\n```\n\n```output\n[1] Bianca Gallo lives in Oslo.\n```\nShe lives in Oslo."
    assert [p["type"] for p in msg["chatforge_parts"]] == ["search", "search_output", "text"]
    [call] = msg["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "search"
    assert json.loads(call["function"]["arguments"]) == {"query": "Bianca Gallo"}
    assert call["chatforge_output"] == "[1] Bianca Gallo lives in Oslo."
