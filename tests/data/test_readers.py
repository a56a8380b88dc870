"""Readers on real files from ../shared/data and small fixtures: counts, charsets, formats."""

from __future__ import annotations

import gzip
import json
import lzma

import pytest

from chatforge.common import ChatforgeError
from chatforge.data.readers import Reader, decode_html, expand_inputs, shard_files


def _read(path, **kw):
    r = Reader(**kw)
    docs = list(r.read(path))
    st = r.stats.to_dict()
    assert st["in"] == st["kept"] + sum(st["dropped"].values())
    return docs, st


def test_real_common_crawl_warc(shared_data):
    docs, st = _read(shared_data / "warc" / "cc-main-2020-34-excerpt.warc.gz")
    assert len(docs) == 16 and st["kept"] == 16
    assert st["dropped"] == {"record_request": 17, "record_metadata": 16, "record_warcinfo": 1}
    assert all(d.url.startswith("http") and d.meta["format"] == "html" for d in docs)
    # a windows-1251 page is decoded as such, not as mojibake
    ru = [d for d in docs if d.meta["charset"] == "cp1251"]
    assert ru and any("а" <= c <= "я" for c in ru[0].text)


@pytest.mark.parametrize("name,reason", [("clipped.warc.gz", "truncated_record"),
                                         ("edge-cases/example-bad-non-chunked.warc.gz", "corrupt_stream"),
                                         ("edge-cases/example-wrong-chunks.warc.gz", "corrupt_stream")])
def test_broken_warcs_counted(shared_data, name, reason):
    docs, st = _read(shared_data / "warc" / name)
    assert st["dropped"].get(reason, 0) >= 1


def test_chunked_and_wet(shared_data):
    docs, _ = _read(shared_data / "warc" / "edge-cases" / "example-iana.org-chunked.warc")
    assert len(docs) == 1 and "Internet Assigned Numbers Authority" in docs[0].text
    docs, _ = _read(shared_data / "warc" / "whirlwind.warc.wet.gz")
    assert len(docs) == 1 and docs[0].meta["format"] == "text"  # WET is text already: no extraction


def test_html_file_and_dir(shared_data):
    files = expand_inputs([str(shared_data / "web" / "pages")])
    assert len(files) == 320
    assert shard_files(files, 1, 4) == files[1::4]
    docs, st = _read(files[0])
    assert len(docs) == 1 and "<html" in docs[0].text.lower()


def test_jsonl_compressed_and_bad_lines(tmp_path):
    import zstandard

    lines = [json.dumps({"id": "a", "text": "hello", "url": "http://x.org", "score": 1.5}), "{not json",
             json.dumps({"id": "b", "body": "no text field"}), json.dumps({"text": "second"})]
    raw = ("\n".join(lines) + "\n").encode()
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "d.jsonl.xz").write_bytes(lzma.compress(raw))
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    for name in ("d.jsonl.gz", "d.jsonl.xz", "d.jsonl.zst"):
        docs, st = _read(tmp_path / name)
        assert [d.text for d in docs] == ["hello", "second"]
        assert docs[0].id == "a" and docs[0].url == "http://x.org" and docs[0].meta["score"] == 1.5
        assert st["dropped"] == {"bad_json": 1, "no_text": 1}
    # a truncated .gz: what was readable is kept, the loss is counted
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(raw * 200)[:-40])
    docs, st = _read(tmp_path / "cut.jsonl.gz")
    assert 100 < len(docs) < 400 and st["dropped"]["corrupt_stream"] == 1


def test_parquet_fineweb_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"text": ["doc one", "doc two", ""], "id": ["<urn:1>", "<urn:2>", "<urn:3>"],
                  "url": ["http://a.com", "http://b.com", "http://c.com"], "dump": ["CC-MAIN-2024-10"] * 3,
                  "language": ["en"] * 3, "language_score": [0.9, 0.8, 0.7], "token_count": [2, 2, 0]})
    pq.write_table(t, tmp_path / "000_00000.parquet")
    docs, st = _read(tmp_path / "000_00000.parquet")
    assert [d.text for d in docs] == ["doc one", "doc two"] and st["dropped"] == {"no_text": 1}
    assert docs[1].url == "http://b.com" and docs[1].meta["dump"] == "CC-MAIN-2024-10"
    with pytest.raises(ChatforgeError, match="no 'body' column"):
        _read(tmp_path / "000_00000.parquet", text_key="body")


def test_gutenberg_book_becomes_chunks(shared_data):
    docs, _ = _read(shared_data / "text" / "gutenberg" / "Pride-and-Prejudice_1342.txt.xz", chunk_words=2000)
    text = "\n\n".join(d.text for d in docs)
    assert "PROJECT GUTENBERG" not in text.upper()[:2000] and "Gutenberg" not in docs[-1].text[-3000:]
    assert "It is a truth universally acknowledged" in text
    words = [len(d.text.split()) for d in docs]
    assert 50 <= len(docs) <= 80 and all(w >= 2000 for w in words[:-1]) and max(words) < 4000
    # hard-wrapped paragraphs are joined into lines; paragraph breaks stay
    assert "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife." in text


def test_decode_html_declared_and_mislabelled():
    page = "<html><head><meta charset='iso-8859-1'></head><body>Café naïve</body></html>"
    assert decode_html(page.encode("latin-1"))[0].endswith("Café naïve</body></html>")
    # declared utf-8 in the header but really cp1252: the declared codec fails, detection wins
    text, cs = decode_html("Grüße aus Köln, schöne Größe".encode("cp1252"), "text/html; charset=utf-8")
    assert "Köln" in text


def test_unknown_inputs_are_errors(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(ChatforgeError, match="unknown input format"):
        expand_inputs([str(tmp_path / "x.bin")])
    with pytest.raises(ChatforgeError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.warc")])


def test_warc_gzip_content_encoding_and_charset(tmp_path):
    """A response whose body is gzip Content-Encoded and declared windows-1251 in a <meta>."""
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    html = "<html><head><meta charset=\"windows-1251\"></head><body><p>Привет, мир! Это проверка.</p></body></html>"
    body = gzip.compress(html.encode("cp1251"))
    with open(tmp_path / "enc.warc.gz", "wb") as f:
        w = WARCWriter(f, gzip=True)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                                           ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
        rec = w.create_warc_record("http://example.ru/", "response", payload=io.BytesIO(body), http_headers=http)
        w.write_record(rec)
        rec.raw_stream.close()
    docs, st = _read(tmp_path / "enc.warc.gz")
    assert len(docs) == 1 and "Привет, мир!" in docs[0].text and docs[0].meta["charset"] == "cp1251"


def test_wikitext_becomes_detokenized_articles(shared_data):
    docs, _ = _read(shared_data / "text" / "wikitext-2-valid.tokens.txt")
    assert docs[0].text.startswith("= Homarus gammarus =")
    assert " @-@ " not in docs[0].text and " , " not in docs[0].text
    assert sum(d.text.startswith("= ") and not d.text.startswith("= =") for d in docs) >= 50  # one per article


def test_parquet_and_warc_are_streamed(tmp_path):
    """A FineWeb-style parquet and a Common Crawl-style WARC.gz are read a batch / a record at a
    time: memory while reading stays a small fraction of the data, however big the file."""
    import io
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    text = " ".join(f"word{i % 997}" for i in range(400))  # ~3 KB, a FineWeb document's size
    n = 12_000  # ~36 MB of text
    pq.write_table(pa.table({"text": [f"{k} {text}" for k in range(n)], "id": [str(k) for k in range(n)]}),
                   tmp_path / "fw.parquet", row_group_size=1000)
    peak, count = 0, 0
    for d in Reader().read(tmp_path / "fw.parquet"):
        count += 1
        peak = max(peak, pa.total_allocated_bytes())
    assert count == n and peak < 0.5 * n * len(text)  # reading it whole would take >= 1x

    text = " ".join(f"word{i % 997}" for i in range(1500))  # ~12 KB

    body = ("<html><body><p>" + text + "</p></body></html>").encode()
    with open(tmp_path / "cc.warc.gz", "wb") as f:
        w = WARCWriter(f, gzip=True)
        for k in range(400):  # ~5 MB of HTML
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            rec = w.create_warc_record(f"https://example.com/{k}", "response", payload=io.BytesIO(body), http_headers=http)
            w.write_record(rec)
            rec.raw_stream.close()
    tracemalloc.start()
    count = sum(1 for _ in Reader().read(tmp_path / "cc.warc.gz"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 400 and peak < 0.1 * 400 * len(body)
