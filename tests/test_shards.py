import numpy as np
import pytest

from chatforge.common import ChatforgeError
from chatforge.data.shards import ShardWriter, TokenShards, dtype_for_vocab, write_meta


def test_roundtrip_across_shard_boundaries(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 1000, size=rng.integers(1, 50)).tolist() for _ in range(40)]
    w = ShardWriter(tmp_path, "train", vocab_size=1000, bos_id=0, shard_tokens=100)
    for d in docs:
        w.add(d)
    w.close()
    assert len(w.paths) > 3  # several shards, so reads cross boundaries
    write_meta(tmp_path, vocab_size=1000, bos_id=0, splits={"train": {"tokens": w.total_tokens, "docs": w.total_docs}})
    ts = TokenShards(tmp_path, "train")
    flat = np.concatenate([[0] + d for d in docs])
    assert len(ts) == len(flat)
    for start in (0, 5, 99, 100, 101, len(flat) - 7):
        n = min(37, len(flat) - start)
        np.testing.assert_array_equal(ts.tokens(start, n), flat[start:start + n])
    assert [d.tolist() for d in ts.documents()] == docs
    with pytest.raises(IndexError):
        ts.tokens(len(flat) - 1, 2)


def test_dtype_choice():
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32


def test_missing_dir_is_clear_error(tmp_path):
    with pytest.raises(ChatforgeError, match="chatforge data tokenize"):
        TokenShards(tmp_path, "train")
