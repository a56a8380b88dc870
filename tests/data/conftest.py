"""Fixture builders for the data tests: WARC files from real pages, a byte-level tokenizer."""

from __future__ import annotations

import gzip
import io
import json

from chatforge.data.readers import decode_html


def real_page(shared, file: str) -> tuple[str, str, dict]:
    """(url, html, expected snippets) of one of the 320 real pages."""
    exp = json.loads((shared / "web" / "expected-snippets.json").read_text())
    for url, v in exp.items():
        if v["file"] == file:
            html = decode_html(gzip.open(shared / "web" / "pages" / file).read())[0]
            return url, html, v
    raise KeyError(file)


def write_warc(path, pages: list[tuple[str, str]], gzip_records: bool = True, extra_records: bool = True) -> None:
    """pages: [(url, html)] -> a WARC with a warcinfo, and per page a request + response record."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gzip_records)

        def put(rec):
            w.write_record(rec)
            rec.raw_stream.close()  # warcio buffers payloads in temp files; close them

        if extra_records:
            put(w.create_warcinfo_record("test.warc", {"software": "chatforge tests"}))
        for url, html in pages:
            if extra_records:
                req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "x")], is_http_request=True)
                put(w.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=req))
            body = html.encode("utf-8")
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                               ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            put(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))


class ByteTokenizer:
    """The Tokenizer API (vocab_size, bos_id, encode_batch, decode) over raw UTF-8 bytes."""

    vocab_size = 256 + 20
    bos_id = 256
    path = None

    def encode_batch(self, texts, num_threads=None):
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("utf-8", "replace")


import pytest  # noqa: E402

ENGLISH = "2ec72b635df55c4e.html.gz"     # plantcaretoday.com: survives every filter
PII_PAGE = "570f3b6b6331e6f0.html.gz"    # theintercept.com
GERMAN = "004a60e635d2c0bd.html.gz"      # focus.de
BLOCKED = "4cf37a3d7824b054.html.gz"     # healthline.com, served here from a UT1-listed domain
EMAIL, IP = "jane.roe@gmail.com", "93.184.216.34"


@pytest.fixture(scope="session")
def byte_tokenizer():
    return ByteTokenizer()


@pytest.fixture(scope="session")
def planted(shared_data, tmp_path_factory):
    """Input dir with planted cases, and one build over it (workers=2)."""
    d = tmp_path_factory.mktemp("inputs")
    url, html, exp = real_page(shared_data, ENGLISH)
    s = exp["with"][1]
    near = html.replace(s, s + " Gardeners in Florida often report the same early flowering.", 1)
    assert near != html
    pii_url, pii_html, pii_exp = real_page(shared_data, PII_PAGE)
    s2 = pii_exp["with"][0]
    pii_html = pii_html.replace(s2, f"Readers can write to {EMAIL} or reach the server at {IP}. " + s2, 1)
    de_url, de_html, _ = real_page(shared_data, GERMAN)
    _, bl_html, _ = real_page(shared_data, BLOCKED)
    write_warc(d / "a.warc.gz", [(url, html), ("https://mirror.example.net/bougainvillea", html),
                                 (de_url, de_html), ("http://www.0-1sex.com/body-fat", bl_html)])
    write_warc(d / "b.warc.gz", [("https://copy.example.org/bougainvillea-care", near), (pii_url, pii_html)])
    # a truncated WARC: a valid one cut in the middle of its second response
    write_warc(d / "full.warc", [(de_url + "?x=1", de_html), (pii_url + "?x=2", pii_html)], gzip_records=False)
    raw = (d / "full.warc").read_bytes()
    (d / "full.warc").unlink()
    (d / "cut.warc").write_bytes(raw[: int(len(raw) * 0.75)])
    out = tmp_path_factory.mktemp("built")
    from chatforge.data.build import BuildConfig, build

    stats = build([str(d)], out, workers=2, config=BuildConfig(), quiet=True)
    return {"inputs": d, "out": out, "stats": stats, "url": url, "exp": exp, "pii_url": pii_url,
            "de_url": de_url}
