"""Search: a BM25 index on real shared text, and the engine's search round trip."""

import json

import pytest
import torch

from chatforge.infer.engine import Engine, Request, SamplingParams
from chatforge.infer.search import SearchIndex, build_index, format_results, search_tool
from chatforge.infer.tools import ToolRegistry


def test_index_on_shared_data(shared_data, tmp_path):
    text = shared_data / "text" / "tinyshakespeare.txt"
    info = build_index([text], tmp_path / "idx.sqlite", quiet=True)
    assert info["docs"] == 1 and info["passages"] > 500
    idx = SearchIndex(tmp_path / "idx.sqlite")
    hits = idx.search("Romeo Juliet", 3)
    assert len(hits) == 3 and all("romeo" in h["text"].lower() or "juliet" in h["text"].lower() for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert idx.search("?!", 3) == []                         # no words: no results, no error
    assert idx.search('"; DROP TABLE passages; --', 3) is not None  # query text is never SQL


def test_index_reads_doc_shards_and_jsonl(tmp_path):
    from chatforge.data.build import write_docs
    from chatforge.data.steps import Doc

    write_docs(tmp_path / "docs" / "docs_00000.jsonl.zst", [Doc("a", "Quentin Marlowe was born in 1931.", "u://a")])
    (tmp_path / "web.jsonl").write_text(json.dumps({"text": "Zelda Fitch lives in Oslo.", "url": "u://b"}) + "\nbad\n")
    info = build_index([tmp_path / "docs", tmp_path / "web.jsonl"], tmp_path / "i.sqlite", quiet=True)
    assert (info["docs"], info["bad_lines"]) == (2, 1)
    idx = SearchIndex(tmp_path / "i.sqlite")
    assert idx.search("where does Zelda Fitch live", 1)[0]["url"] == "u://b"
    assert idx.search("Marlowe birth", 1)[0]["url"] == "u://a"


def test_results_fit_the_token_budget():
    hits = [{"text": "word " * 100}, {"text": "other " * 100}]
    out = format_results(hits, max_tokens=60)
    assert out.startswith("[1] ") and "[2]" not in out and len(out) // 4 <= 62
    assert format_results([], 60) == "no results"


class CopyingModel(torch.nn.Module):
    """A stand-in model: writes a search call for `query`, then, after the engine forces the tool
    output in, answers with the n_copy tokens that follow `cue` in what it was fed (the results)."""

    def __init__(self, tok, query, cue, n_copy):
        super().__init__()
        from chatforge.model import GPTConfig

        self.config = GPTConfig.from_preset("d2", vocab_size=tok.vocab_size, seq_len=512)
        self.tok, self.cue, self.n_copy = tok, tok.encode(cue), n_copy
        self.script = [tok.special_id("search_start")] + tok.encode(query) + [tok.special_id("search_end")]
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def new_kv_cache(self, batch_size, max_len, dtype=None):
        from chatforge.model import KVCache

        self.fed = []
        return KVCache(1, batch_size, 1, max_len, 2, "cpu", torch.float32)

    def forward(self, idx, kv_cache=None, attention_mask=None):
        kv_cache.pos += idx.shape[1]
        self.fed += idx[0].tolist()
        sid = self.tok.special_id
        if sid("output_end") not in self.fed:
            written = len(self.fed) - self.fed.index(sid("assistant_start")) - 1
            nxt = self.script[min(written, len(self.script) - 1)]  # (ignored while output is forced)
        else:  # copy the tokens after the cue from the results, then stop
            after = self.fed[self.fed.index(sid("output_start")):]
            j = next(i for i in range(len(after)) if after[i:i + len(self.cue)] == self.cue) + len(self.cue)
            m = len(self.fed) - self.fed.index(sid("output_end")) - 1  # answer tokens written so far
            nxt = after[j + m] if m < self.n_copy else sid("assistant_end")
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.config.vocab_size)
        logits[:, -1, nxt] = 10.0
        return logits


def test_search_round_trip_in_engine(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    (tmp_path / "web.jsonl").write_text(
        json.dumps({"text": "Bianca Gallo lives in Oslo and works for Northwind."}) + "\n"
        + json.dumps({"text": "The king lives in a castle."}) + "\n")
    build_index([tmp_path / "web.jsonl"], tmp_path / "i.sqlite", quiet=True)
    tools = ToolRegistry([search_tool(tmp_path / "i.sqlite", k=1, tokenizer=tok)])
    model = CopyingModel(tok, "Bianca Gallo", " lives in", n_copy=len(tok.encode(" Oslo")))
    engine = Engine(model, tok, tools=tools)
    prompt = tok.render_for_completion([{"role": "user", "content": "Where does Bianca Gallo live?"}])
    [c] = engine.run_to_completion([Request(prompt, SamplingParams(max_tokens=32, temperature=0))]).values()
    parts = c[0].parts
    assert parts[0] == {"type": "search", "text": "Bianca Gallo"}
    assert parts[1]["type"] == "search_output" and parts[1]["text"].startswith("[1] Bianca Gallo lives in Oslo")
    # the results were in the model's context, and the answer came from them
    assert "Bianca Gallo lives in Oslo" in tok.decode(model.fed)
    assert parts[2] == {"type": "text", "text": " Oslo"}
    assert c[0].finish_reason == "stop"
