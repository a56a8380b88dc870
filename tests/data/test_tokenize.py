"""`tokenize` and `inspect`: document shards -> token shards, and back to the same text."""

from __future__ import annotations

import numpy as np
import pytest

from chatforge.common import ChatforgeError
from chatforge.data.build import read_docs, write_docs
from chatforge.data.shards import TokenShards
from chatforge.data.steps import Doc
from chatforge.data.tokenize import inspect, is_val, tokenize


@pytest.fixture
def docs_dir(tmp_path, shared_data):
    """Real text: Pride and Prejudice chapters as documents, in two doc shards, plus unicode."""
    from chatforge.data.readers import Reader

    docs = list(Reader(chunk_words=1500).read(shared_data / "text" / "gutenberg" / "Pride-and-Prejudice_1342.txt.xz"))
    docs.append(Doc("uni", "naïve café — 東京 🙂 \u200b end"))
    d = tmp_path / "docs"
    write_docs(d / "docs_00000.jsonl.zst", docs[:40])
    write_docs(d / "docs_00001.jsonl.zst", docs[40:])
    return d


def _all_docs(d):
    return [doc for p in sorted(d.glob("docs_*.jsonl.zst")) for doc in read_docs(p)]


def _check_round_trip(docs_dir, out, tok, val_fraction):
    docs = _all_docs(docs_dir)
    want = {s: [d.text for d in docs if (s == "val") == is_val(d.id, val_fraction)] for s in ("train", "val")}
    for split in ("train", "val"):
        ts = TokenShards(out, split)
        got = [tok.decode(ids.tolist()) for ids in ts.documents()]
        assert got == want[split]
        # every document starts with bos, and the stream length is what meta says
        assert len(ts) == ts.meta["splits"][split]["tokens"]
        assert int(ts.tokens(0, 1)[0]) == tok.bos_id


def test_round_trip_byte_tokenizer(docs_dir, tmp_path, byte_tokenizer):
    out = tmp_path / "shards"
    meta = tokenize(docs_dir, byte_tokenizer, out, val_fraction=0.1, shard_tokens=100_000, quiet=True)
    assert meta["dtype"] == "uint16" and meta["splits"]["val"]["docs"] >= 1
    assert len(meta["splits"]["train"]["shards"]) > 1  # crosses shard boundaries
    _check_round_trip(docs_dir, out, byte_tokenizer, 0.1)
    with pytest.raises(ChatforgeError, match="already holds token shards"):
        tokenize(docs_dir, byte_tokenizer, out, quiet=True)


def test_round_trip_real_tokenizer_and_inspect(docs_dir, tmp_path, tiny_tokenizer):
    out = tmp_path / "shards"
    meta = tokenize(docs_dir, tiny_tokenizer.path, out, val_fraction=0.05, quiet=True)
    assert meta["vocab_size"] == tiny_tokenizer.vocab_size and meta["bos_id"] == tiny_tokenizer.bos_id
    _check_round_trip(docs_dir, out, tiny_tokenizer, 0.05)
    text = inspect(out, n=2)  # the tokenizer is found through meta.json
    assert "train:" in text and "PRIDE AND PREJUDICE" in text


def test_uint32_when_vocab_is_large(docs_dir, tmp_path, byte_tokenizer):
    class Big(type(byte_tokenizer)):
        vocab_size = 100_000
        bos_id = 99_999

    out = tmp_path / "big"
    meta = tokenize(docs_dir, Big(), out, val_fraction=0.0, quiet=True)
    assert meta["dtype"] == "uint32"
    ts = TokenShards(out, "train")
    assert ts.shards[0].dtype == np.dtype("<u4") and int(ts.tokens(0, 1)[0]) == 99_999
