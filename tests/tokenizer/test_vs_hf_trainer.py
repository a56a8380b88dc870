"""Slow: our trainer against HF's BpeTrainer configured the same way, on real text."""

import lzma

import pytest

from chatforge.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, train_from_texts

tokenizers = pytest.importorskip("tokenizers")


@pytest.mark.slow
def test_compression_matches_hf_trainer(shared_data):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    books = sorted((shared_data / "text" / "gutenberg").glob("*.txt.xz"))
    train = [lzma.open(p, "rt", encoding="utf-8").read() for p in books[:-2]]
    held = [lzma.open(p, "rt", encoding="utf-8").read() for p in books[-2:]]
    ours = train_from_texts(train, 8192, progress=False)

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.train_from_iterator(train, trainers.BpeTrainer(
        vocab_size=8192, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    n_ours = sum(map(len, ours.encode_batch(held)))
    n_hf = sum(len(e.ids) for e in hf.encode_batch(held))
    assert abs(n_ours / n_hf - 1) < 0.01
    ours_vocab = {ours.token_bytes(i).decode("latin-1") for i in range(ours.n_ordinary)}
    assert len(ours_vocab) == ours.n_ordinary == hf.get_vocab_size() - len(SPECIAL_TOKENS)
