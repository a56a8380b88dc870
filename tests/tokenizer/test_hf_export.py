"""The HF export gives the same ids as our tiktoken-backed encoding."""

import gzip
import json
import lzma

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.tokenizer import SPECIAL_TOKENS, train_from_texts

tokenizers = pytest.importorskip("tokenizers")

# Awkward cases: digit runs, whitespace runs, unicode, contractions, CRLF, specials inside text.
EDGE_CASES = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "\r\n\r\n", "\t\t x", "a  b   c    d", "x    \n\n   y",
    "1234567890 12 3.14159 1,000,000 ٣٤٥ ½ ²", "I'm we'll they've DON'T it's", "naïve café Ünïcödé",
    "日本語のテキスト 中文 한국어", "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇩🇪", "ﬁ ligature e\u0301 combining",
    "zero\u200bwidth non\u00a0breaking\u3000ideographic", "<|bos|>hello<|user_end|> <|reserved_3|>",
    "<|bos", "def f(x):\n    return x**2  # comment\n", "\x00\x01 control \x7f",
]


@pytest.fixture(scope="module")
def docs(shared_data):
    out = []
    with open(shared_data / "gsm8k" / "train.jsonl") as f:
        for k, line in enumerate(f):
            if k >= 1500:
                break
            o = json.loads(line)
            out.append(o["question"] + "\n" + o["answer"])
    with gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt") as f:
        out += [json.loads(line)["chosen"][:3000] for _, line in zip(range(800), f)]
    with lzma.open(shared_data / "instructions" / "t0-train-50k.jsonl.xz", "rt") as f:
        for _, line in zip(range(1000), f):
            o = json.loads(line)
            out.append((o["prompt"] + o["completion"])[:3000])
    for p in sorted((shared_data / "web" / "pages").glob("*.html.gz"))[:150]:  # German/English, raw HTML
        out.append(gzip.open(p, "rb").read().decode("utf-8", errors="replace")[:4000])
    wiki = (shared_data / "text" / "wikitext-2-valid.tokens.txt").read_text(encoding="utf-8")
    out += [d for d in wiki.split("\n \n")[:600] if d]
    assert len(out) > 3000
    return out + EDGE_CASES


@pytest.fixture(scope="module")
def real_tok(shared_data, tmp_path_factory):
    texts = [(shared_data / "text" / name).read_text(encoding="utf-8")
             for name in ("tinyshakespeare.txt", "wikitext-2-test.tokens.txt")]
    tok = train_from_texts(texts, 4096, num_proc=1, progress=False)
    tok.save(tmp_path_factory.mktemp("tok4096"))
    return tok


def _hf(tok, split_special: bool):
    h = tokenizers.Tokenizer.from_file(str(tok.path / "tokenizer.json"))
    h.encode_special_tokens = split_special
    return h


def test_same_ids_on_thousands_of_real_documents(real_tok, docs):
    h = _hf(real_tok, split_special=True)
    ours = real_tok.encode_batch(docs)
    theirs = [e.ids for e in h.encode_batch(docs)]
    bad = [d[:80] for d, a, b in zip(docs, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} of {len(docs)} documents differ, e.g. {bad[:3]}"
    assert h.decode_batch(theirs[:50], skip_special_tokens=False) == docs[:50]


def test_same_ids_with_special_tokens_allowed(real_tok, docs):
    h = _hf(real_tok, split_special=False)  # HF default: special-token text becomes special ids
    sample = docs[:300] + [f"{s} between {s}{s}text" for s in SPECIAL_TOKENS] + EDGE_CASES
    ours = real_tok.encode_batch(sample, allowed_special="all")
    assert ours == [e.ids for e in h.encode_batch(sample)]
    assert any(real_tok.is_special(i) for row in ours for i in row)


def test_transformers_fast_tokenizer_loads_the_directory(real_tok, docs):
    transformers = pytest.importorskip("transformers")
    fast = transformers.AutoTokenizer.from_pretrained(str(real_tok.path))
    assert fast.bos_token_id == real_tok.bos_id and len(fast) == real_tok.vocab_size
    for d in docs[:200] + EDGE_CASES:
        assert fast.encode(d, add_special_tokens=False) == real_tok.encode(d, allowed_special="all")
    fast_plain = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(real_tok.path / "tokenizer.json"), split_special_tokens=True)
    for d in EDGE_CASES:
        assert fast_plain.encode(d, add_special_tokens=False) == real_tok.encode(d)


def test_same_ids_on_edge_cases(tiny_tokenizer):
    assert [e.ids for e in _hf(tiny_tokenizer, True).encode_batch(EDGE_CASES)] == \
        tiny_tokenizer.encode_batch(EDGE_CASES)
    assert [e.ids for e in _hf(tiny_tokenizer, False).encode_batch(EDGE_CASES)] == \
        tiny_tokenizer.encode_batch(EDGE_CASES, allowed_special="all")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_same_ids_on_arbitrary_unicode(tiny_tokenizer, text):
    h = _hf(tiny_tokenizer, split_special=True)
    assert h.encode(text).ids == tiny_tokenizer.encode(text)
