import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.tokenizer import SPECIAL_TOKENS, Tokenizer


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_roundtrip_arbitrary_unicode(tiny_tokenizer, text):
    tok = tiny_tokenizer
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < tok.n_ordinary for i in ids)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_roundtrip_and_decode_never_raises(tiny_tokenizer, data):
    tok = tiny_tokenizer
    ids = list(data)  # ids 0..255 are the raw bytes
    assert tok.decode_bytes(ids) == data
    assert tok.decode(ids) == data.decode("utf-8", errors="replace")
    text = data.decode("utf-8", errors="replace")
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 511), max_size=60))
def test_decode_of_any_ids_never_raises(tiny_tokenizer, ids):
    assert isinstance(tiny_tokenizer.decode(ids), str)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(SPECIAL_TOKENS)), max_size=8))
def test_special_tokens_never_come_from_plain_text(tiny_tokenizer, pieces):
    tok = tiny_tokenizer
    text = "".join(pieces)
    ids = tok.encode(text)
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == text
    assert not any(tok.is_special(i) for b in tok.encode_batch([text, text]) for i in b)


def test_allowed_special_tokens_are_encoded_as_specials(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "<|bos|>hi<|user_start|>there<|user_end|>"
    assert tok.encode(text, allowed_special="all") == [tok.bos_id, *tok.encode("hi"),
                                                       tok.special_id("user_start"),
                                                       *tok.encode("there"), tok.special_id("<|user_end|>")]
    only_bos = tok.encode(text, allowed_special={"<|bos|>"})
    assert only_bos[0] == tok.bos_id and sum(tok.is_special(i) for i in only_bos) == 1
    assert tok.encode_batch([text], allowed_special="all")[0] == tok.encode(text, allowed_special="all")


def test_special_ids_are_the_last_ids_in_order(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.vocab_size == 512 and tok.n_ordinary == 512 - len(SPECIAL_TOKENS)
    assert [tok.special_id(s) for s in SPECIAL_TOKENS] == list(range(tok.n_ordinary, 512))
    assert tok.bos_id == tok.special_id("bos") == tok.n_ordinary


def test_token_byte_lengths(tiny_tokenizer):
    tok = tiny_tokenizer
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert (lengths[: tok.n_ordinary] >= 1).all() and (lengths[tok.n_ordinary:] == 0).all()
    text = "The quick brown fox, 12345!\n\n  indented"
    assert int(np.sum(lengths[tok.encode(text)])) == len(text.encode("utf-8"))


def test_encode_batch_matches_encode(tiny_tokenizer):
    texts = ["hello world", "", "ünïcödé 🙂", "  spaces   and\ttabs\n"] * 5
    assert tiny_tokenizer.encode_batch(texts) == [tiny_tokenizer.encode(t) for t in texts]


def test_save_load_roundtrip(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    loaded = Tokenizer.load(tok.path)
    assert loaded.merges == tok.merges and loaded.vocab_size == tok.vocab_size
    tok2 = Tokenizer.load(loaded.save(tmp_path / "copy"))
    text = "To be, or not to be: that is the question. 2026"
    assert tok2.encode(text) == tok.encode(text) and tok2.path == tmp_path / "copy"
