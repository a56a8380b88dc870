"""`chatforge data build | tokenize | inspect` as a user runs them."""

from __future__ import annotations

import json

from chatforge.cli import main


def test_build_tokenize_inspect_cli(tmp_path, shared_data, tiny_tokenizer, capsys):
    from chatforge.data.readers import Reader

    # real text as JSONL: chapters of a Gutenberg book, one with a planted email, one duplicated
    docs = list(Reader(chunk_words=800).read(shared_data / "text" / "gutenberg" / "Frankenstein_84.txt.xz"))[:12]
    rows = [{"id": f"f{i}", "text": d.text, "url": f"https://books.example.org/frankenstein/{i}"} for i, d in enumerate(docs)]
    rows[3]["text"] += "\n\nCorrections may be sent to victor.f@ingolstadt-uni.de before the end of the month."
    rows.append(dict(rows[5], id="dup"))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "docs"
    assert main(["data", "build", str(src), "--out", str(out), "--workers", "1", "--no-quality"]) == 0
    summary = capsys.readouterr().out
    assert "dedup" in summary and "exact_duplicate 1" in summary and "emails 1" in summary
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_out"] == 12
    shards = tmp_path / "shards"
    assert main(["data", "tokenize", str(out), "--tokenizer", str(tiny_tokenizer.path), "--out", str(shards),
                 "--val-fraction", "0.2"]) == 0
    assert main(["data", "inspect", str(shards), "-n", "1"]) == 0
    shown = capsys.readouterr().out
    assert "train:" in shown and "val:" in shown and "document 0" in shown


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "tokenize", str(tmp_path), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["data", "build", str(tmp_path / "nope.warc.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
