import math

import pytest
import torch

from chatforge.eval.bpb import bits_per_byte, text_documents, wikitext_articles, wikitext_detokenize

from .helpers import BigramModel, ByteTokenizer


def test_uniform_model_has_log2_vocab_bits_per_byte():
    # a byte tokenizer + uniform model: every byte costs log2(257) bits, whatever the windowing
    tok = ByteTokenizer()
    model = BigramModel(torch.zeros(257, 257))
    docs = ["hello world, " * 20, "short", "x" * 300]
    r = bits_per_byte(model, tok, docs, seq_len=16, batch_size=3)
    assert r["bpb"] == pytest.approx(math.log2(257), rel=1e-6)
    assert r["tokens"] == r["bytes"] == sum(len(d) for d in docs)
    assert r["documents"] == 3
    capped = bits_per_byte(model, tok, docs, seq_len=16, max_tokens=50)
    assert capped["tokens"] == 50


def test_known_bigram_loss():
    # model: after 'a' always 'b' with prob p; the text 'abab...' costs known nats per byte
    tok = ByteTokenizer()
    table = torch.zeros(257, 257)
    table[ord("a"), ord("b")] = 10.0
    table[ord("b"), ord("a")] = 10.0
    model = BigramModel(table)
    doc = "ab" * 50
    r = bits_per_byte(model, tok, [doc], seq_len=1000)
    p = math.exp(10) / (math.exp(10) + 256)
    expected_nats = math.log(257) + (len(doc) - 1) * -math.log(p)  # first byte after <|bos|> is uniform
    assert r["bpb"] == pytest.approx(expected_nats / (math.log(2) * len(doc)), rel=1e-5)


def test_wikitext_detokenize_and_split(tmp_path):
    assert wikitext_detokenize("a guest @-@ starring role , in 2 @,@ 000 ( UK ) .") == "a guest-starring role, in 2,000 (UK)."
    assert wikitext_detokenize('the " Craig " episode') == 'the "Craig" episode'
    p = tmp_path / "wiki.tokens.txt"
    p.write_text(" \n = First = \n \n Some text . \n = = Section = = \n More . \n = Second = \n Other @-@ text . \n")
    arts = wikitext_articles(p)
    assert len(arts) == 2
    assert arts[0].startswith("= First =") and "= = Section = =" in arts[0]
    assert arts[1].endswith("Other-text.")
    assert text_documents(p) == arts
    plain = tmp_path / "plain.txt"
    plain.write_text("para one\n\npara two\n")
    assert text_documents(plain) == ["para one\n\npara two"]


def test_real_wikitext(shared_data):
    arts = wikitext_articles()
    assert 50 <= len(arts) <= 70  # 62 articles in the test split
    assert " @-@ " not in "".join(arts)
