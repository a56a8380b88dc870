import json

import zstandard

from chatforge.tokenizer import corpus
from chatforge.tokenizer.corpus import CorpusStats, iter_texts


def test_formats_fields_and_skips(tmp_path, monkeypatch):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    rows = [{"prompt": "Q1 ", "completion": "A1"}, {"prompt": "Q2"}, {"other": 1}, [1, 2]]
    raw = "".join(json.dumps(r) + "\n" for r in rows).encode() + b"{broken\n\n"
    (d / "sub" / "x.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (d / "bin.txt").write_bytes(b"\x00\x01\x02" * 100)  # binary inside a directory: skipped, reported
    (d / "notes.md").write_text("markdown text\n")
    stats = CorpusStats()
    texts = list(iter_texts([d], text_fields="prompt,completion", stats=stats))
    assert texts == ["markdown text\n", "Q1 \nA1", "Q2"]
    assert stats.files == 2 and stats.skipped_records == 3
    assert len(stats.skipped_files) == 1 and "binary" in stats.skipped_files[0]


def test_long_text_files_stream_in_blocks_cut_at_newlines(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 100)
    lines = [f"line {i} " + "x" * (i % 37) + "\n" for i in range(200)]
    (tmp_path / "big.txt").write_text("".join(lines))
    blocks = list(iter_texts(tmp_path / "big.txt"))
    assert len(blocks) > 10 and "".join(blocks) == "".join(lines)
    assert all(b.endswith("\n") for b in blocks)
