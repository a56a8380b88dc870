import pytest

from chatforge.data.shards import ShardWriter, write_meta


def build_shards(tokenizer, text: str, out_dir, val_frac=0.1, vocab_size=None):
    """Paragraphs of `text` as documents; the last val_frac of them is the val split (val_frac 0:
    no val split, a held-out text tokenized whole). vocab_size: what meta.json records."""
    docs = [p for p in text.split("\n\n") if p.strip()]
    vocab = vocab_size or tokenizer.vocab_size
    n_val = max(1, int(len(docs) * val_frac)) if val_frac else 0
    parts = [("train", docs[:len(docs) - n_val])] + ([("val", docs[len(docs) - n_val:])] if n_val else [])
    splits = {}
    for split, part in parts:
        w = ShardWriter(out_dir, split, vocab, tokenizer.bos_id, shard_tokens=20_000)
        for ids in tokenizer.encode_batch(part):
            w.add(ids)
        w.close()
        splits[split] = {"tokens": w.total_tokens, "docs": w.total_docs, "shards": [p.name for p in w.paths]}
    write_meta(out_dir, vocab_size=vocab, bos_id=tokenizer.bos_id, splits=splits)
    return out_dir


@pytest.fixture(scope="session")
def tiny_shards(tiny_tokenizer, shared_data, tmp_path_factory):
    """Token shards (several per split) of ~200 KB of tinyshakespeare, with the tiny tokenizer."""
    text = (shared_data / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000]
    return build_shards(tiny_tokenizer, text, tmp_path_factory.mktemp("shards"))
