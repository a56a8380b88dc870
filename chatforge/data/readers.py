"""Readers: turn input files of any supported format into a stream of `Doc`s.

Formats (picked by file name): WARC (.warc, .warc.gz; response records with HTML), HTML files
(.html/.htm, optionally .gz), JSONL with a text field (.jsonl/.json, optionally .gz/.zst/.xz),
plain text (.txt/.text/.tokens, optionally compressed; split into chunks at paragraph breaks),
and Hugging Face parquet shards (FineWeb columns). Directories are walked, globs expanded.

Bad input is counted per reason in the reader's stats and skipped, never fatal: a truncated
gzip member, a WARC header that does not parse, a payload no charset decodes. A broken WARC
stream cannot be resynchronised, so the rest of that file is counted as lost ("corrupt_stream").
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import lzma
import re
import time
import zlib
from pathlib import Path
from typing import Iterator

from chatforge.common import ChatforgeError
from chatforge.data.steps import Doc, StepStats

WARC_SUFFIXES = (".warc", ".warc.gz", ".arc.gz", ".wet", ".wet.gz")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt", ".text", ".tokens", ".md")
PARQUET_SUFFIXES = (".parquet",)
COMPRESSIONS = ("", ".gz", ".zst", ".xz", ".bz2")


def input_kind(path: str | Path) -> str | None:
    """'warc' | 'html' | 'jsonl' | 'text' | 'parquet', or None for files we do not read."""
    name = str(path).lower()
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    for kind, sfx in (("html", HTML_SUFFIXES), ("jsonl", JSONL_SUFFIXES), ("text", TEXT_SUFFIXES)):
        if any(name.endswith(s + c) for s in sfx for c in COMPRESSIONS):
            return kind
    return None


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, directories (walked, unsupported files ignored) and globs -> sorted unique files."""
    out: list[Path] = []
    for item in inputs:
        paths = [Path(p) for p in sorted(glob.glob(item, recursive=True))] if glob.has_magic(item) else [Path(item)]
        if not paths:
            raise ChatforgeError(f"'{item}' matches no files; check the path or glob")
        for p in paths:
            if p.is_dir():
                out += [f for f in sorted(p.rglob("*")) if f.is_file() and input_kind(f)]
            elif p.is_file():
                if not input_kind(p):
                    raise ChatforgeError(f"{p}: unknown input format; use .warc(.gz), .html(.gz), .jsonl(.gz/.zst/.xz), .txt, .parquet")
                out.append(p)
            else:
                raise ChatforgeError(f"{p} does not exist")
    seen, uniq = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    if not uniq:
        raise ChatforgeError(f"no readable input files in {inputs}")
    return uniq


def shard_files(files: list, rank: int, world_size: int) -> list:
    """This rank's share of the input files (round robin), for distributed runs."""
    return files[rank::world_size]


def open_binary(path: str | Path):
    """Open a file, transparently decompressing .gz / .zst / .xz / .bz2."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


# ---------------------------------------------------------------- charset

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)


def _codec(name: str | None) -> str | None:
    import codecs

    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(data: bytes, content_type: str | None = None) -> tuple[str, str] | None:
    """Bytes -> (text, charset), or None when nothing decodes them.

    Order, as browsers do: BOM, the HTTP Content-Type charset, a <meta charset> in the first
    4 KB, UTF-8, then statistical detection (charset-normalizer). A declared charset that
    fails to decode is ignored rather than trusted (mislabelled pages are common).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace"), "utf-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace"), "utf-16"
    candidates = []
    if content_type:
        m = _HEADER_CHARSET.search(content_type)
        if m:
            candidates.append(m.group(1))
    m = _META_CHARSET.search(data[:4096])
    if m:
        candidates.append(m.group(1).decode("ascii", "ignore"))
    candidates.append("utf-8")
    for name in candidates:
        codec = _codec(name)
        if codec in ("iso8859-1", "ascii"):
            codec = "cp1252"  # what browsers actually use for latin-1 labels
        if codec:
            try:
                return data.decode(codec), codec
            except (UnicodeDecodeError, LookupError):
                continue
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:65536]).best()
    except Exception:
        best = None
    if best is not None and best.encoding:
        try:
            return data.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    return None


# ---------------------------------------------------------------- readers

_WIKI_HEADING = re.compile(r"^ = [^=].* = $", re.M)


def wikitext_sections(text: str) -> list[str]:
    """WikiText's tokenized form -> one detokenized article per top-level ' = Title = ' heading,
    paragraphs separated by blank lines (undoing ' @-@ ', ' , ' ... as the bpb eval does)."""
    from chatforge.eval.bpb import wikitext_detokenize, wikitext_split

    return [wikitext_detokenize("\n\n".join(a)) for a in wikitext_split(text)]


def unwrap(para: str) -> str:
    """Join a hard-wrapped paragraph (Gutenberg wraps at ~70 columns) into one line.

    Only when it looks wrapped: most lines but the last are 50-80 characters long.
    Verse, dialogue and lists (short lines) keep their line breaks.
    """
    lines = para.split("\n")
    if len(lines) < 2:
        return para
    body = lines[:-1]
    if sum(50 <= len(ln) <= 80 for ln in body) >= 0.6 * len(body):
        return " ".join(ln.strip() for ln in lines)
    return para


class Reader:
    """Iterates one file's documents; counts each record/line in `stats` (read step)."""

    name = "read"

    def __init__(self, text_key: str = "text", chunk_words: int = 2000, default_lang: str | None = None):
        self.stats = StepStats(self.name)
        self.text_key = text_key
        self.chunk_words = chunk_words

    def read(self, path: str | Path) -> Iterator[Doc]:
        kind = input_kind(path)
        if kind is None:
            raise ChatforgeError(f"{path}: unknown input format")
        gen = getattr(self, f"_read_{kind}")(Path(path))
        # time only the reader's own work, not what downstream steps do between yields
        while True:
            t0 = time.perf_counter()
            try:
                doc = next(gen)
            except StopIteration:
                self.stats.seconds += time.perf_counter() - t0
                return
            self.stats.seconds += time.perf_counter() - t0
            yield doc

    def _keep(self, doc: Doc, nbytes: int) -> Doc:
        st = self.stats
        st.n_in += 1
        st.kept += 1
        st.bytes_in += nbytes
        st.bytes_out += nbytes
        return doc

    def _skip(self, reason: str, nbytes: int = 0, path: Path | None = None) -> None:
        """Count a dropped record; a file-level failure also names the file in stats `examples`."""
        st = self.stats
        st.n_in += 1
        st.bytes_in += nbytes
        st.drop(reason, str(path) if path is not None else None)

    # WARC ---------------------------------------------------------------
    def _read_warc(self, path: Path) -> Iterator[Doc]:
        from warcio.archiveiterator import ArchiveIterator

        import logging

        logging.getLogger("warcio").setLevel(logging.ERROR)  # per-record URI warnings: not our output

        class QuietIterator(ArchiveIterator):
            INC_RECORD = ""  # warcio prints a warning per mis-sized record; we count them instead

        with open(path, "rb") as raw:
            try:
                it = iter(QuietIterator(raw, no_record_parse=False, arc2warc=True))
            except Exception:
                self._skip("corrupt_stream", path=path)
                return
            index = 0
            while True:
                try:
                    record = next(it)
                except StopIteration:
                    return
                except (EOFError, OSError, zlib.error, ValueError, Exception):  # noqa: B014 - warcio raises many kinds
                    # truncated gzip member / unparsable header: the stream cannot be resynced
                    self._skip("corrupt_stream", path=path)
                    return
                index += 1
                try:
                    doc = self._warc_record(record, path, index)
                except (EOFError, OSError, zlib.error, ValueError) as e:
                    self._skip("truncated_record" if isinstance(e, (EOFError, zlib.error)) else "bad_record", path=path)
                    continue
                except Exception:
                    self._skip("bad_record")
                    continue
                if doc is not None:
                    yield doc

    def _warc_record(self, record, path: Path, index: int) -> Doc | None:
        if record.rec_type not in ("response", "resource", "conversion"):
            self._skip(f"record_{record.rec_type}")
            return None
        if record.rec_type == "response":
            http = record.http_headers
            if http is None:
                self._skip("no_http_headers")
                return None
            status = http.get_statuscode()
            if not str(status).startswith("2"):
                self._skip("http_status_not_2xx")
                return None
            ctype = http.get_header("Content-Type") or ""
        else:
            ctype = record.rec_headers.get_header("Content-Type") or ""
        ident = (record.rec_headers.get_header("WARC-Identified-Payload-Type") or ctype).lower()
        is_wet = record.rec_type == "conversion"
        if not is_wet and "html" not in ident and "html" not in ctype.lower():
            self._skip("not_html")
            return None
        try:
            data = record.content_stream().read()  # de-chunks and undoes Content-Encoding (gzip, br)
        except (zlib.error, EOFError, OSError, ValueError):
            self._skip("bad_content_encoding")
            return None
        if getattr(record.raw_stream, "limit", 0) > 0:  # fewer bytes than Content-Length: cut off
            self._skip("truncated_record", len(data), path)
            return None
        if not data.strip():
            self._skip("empty_payload")
            return None
        decoded = decode_html(data, ctype)
        if decoded is None:
            self._skip("undecodable", len(data))
            return None
        text, charset = decoded
        url = record.rec_headers.get_header("WARC-Target-URI") or ""
        rid = record.rec_headers.get_header("WARC-Record-ID") or f"{path.name}/{index}"
        meta = {"format": "text" if is_wet else "html", "charset": charset, "source": path.name}
        date = record.rec_headers.get_header("WARC-Date")
        if date:
            meta["date"] = date
        return self._keep(Doc(rid.strip("<>"), text, url, meta), len(data))

    def _read_decoded(self, path: Path):
        """A whole (possibly compressed) file as text -> (text, charset, bytes), or None (counted)."""
        try:
            with open_binary(path) as f:
                data = f.read()
        except (OSError, EOFError, zlib.error, lzma.LZMAError):
            self._skip("corrupt_file", path=path)
            return None
        decoded = decode_html(data)
        if decoded is None:
            self._skip("undecodable", len(data))
            return None
        return decoded[0], decoded[1], len(data)

    # HTML file ----------------------------------------------------------
    def _read_html(self, path: Path) -> Iterator[Doc]:
        loaded = self._read_decoded(path)
        if loaded is None:
            return
        text, charset, n_bytes = loaded
        yield self._keep(Doc(path.name, text, "", {"format": "html", "charset": charset, "source": path.name}), n_bytes)

    # JSONL --------------------------------------------------------------
    def _read_jsonl(self, path: Path) -> Iterator[Doc]:
        key = self.text_key
        try:
            f = io.BufferedReader(open_binary(path))
        except OSError:
            self._skip("corrupt_file", path=path)
            return
        with f:
            index = 0
            while True:
                try:
                    line = f.readline()
                except (OSError, EOFError, zlib.error, lzma.LZMAError, Exception):  # truncated compressed stream
                    self._skip("corrupt_stream", path=path)
                    return
                if not line:
                    return
                index += 1
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    self._skip("bad_json", len(line))
                    continue
                text = obj.get(key) if isinstance(obj, dict) else None
                if not isinstance(text, str) or not text:
                    self._skip("no_text", len(line))
                    continue
                meta = {k: v for k, v in obj.items() if k not in (key, "id", "url") and isinstance(v, (str, int, float, bool))}
                meta.update(format="text", source=path.name)
                doc_id = str(obj.get("id") or f"{path.name}/{index}")
                yield self._keep(Doc(doc_id, text, str(obj.get("url") or ""), meta), len(line))

    # plain text ---------------------------------------------------------
    def _read_text(self, path: Path) -> Iterator[Doc]:
        """A big text file becomes documents of ~chunk_words words, cut only at paragraph breaks.

        Paragraphs are separated by blank lines. A Project Gutenberg header/licence (between the
        file start and '*** START OF ...', and after '*** END OF ...') is cut off. WikiText files
        are detokenized and split at article boundaries first.
        """
        loaded = self._read_decoded(path)
        if loaded is None:
            return
        text = loaded[0].replace("\r\n", "\n")
        m = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
        if m:
            text = text[m.end():]
            e = re.search(r"^(\*\*\* ?END OF (THE|THIS)|\s*End of (the )?Project Gutenberg)", text, re.M | re.I)
            if e:
                text = text[:e.start()]
        sections = [text]
        if " @-@ " in text[:200_000] or _WIKI_HEADING.search(text[:5000]):
            sections = wikitext_sections(text)  # WikiText "tokens" form: one section per article
        k = 0
        for section in sections:
            buf, words = [], 0
            for para in re.split(r"\n\s*\n", section):
                para = unwrap(para.strip("\n"))
                if not para.strip():
                    continue
                buf.append(para)
                words += len(para.split())
                if words >= self.chunk_words:
                    k += 1
                    yield self._text_doc(path, k, buf)
                    buf, words = [], 0
            if buf:
                k += 1
                yield self._text_doc(path, k, buf)

    def _text_doc(self, path: Path, k: int, paras: list[str]) -> Doc:
        body = "\n\n".join(paras)
        return self._keep(Doc(f"{path.name}/{k}", body, "", {"format": "text", "source": path.name}), len(body.encode()))

    # parquet ------------------------------------------------------------
    def _read_parquet(self, path: Path) -> Iterator[Doc]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception:
            self._skip("corrupt_file", path=path)
            return
        names = pf.schema_arrow.names
        if self.text_key not in names:
            raise ChatforgeError(f"{path}: no '{self.text_key}' column (columns: {names}); pass --text-key")
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    index += 1
                    text = row.get(self.text_key)
                    if not isinstance(text, str) or not text:
                        self._skip("no_text")
                        continue
                    meta = {k: v for k, v in row.items() if k not in (self.text_key, "id", "url") and isinstance(v, (str, int, float, bool))}
                    meta.update(format="text", source=path.name)
                    yield self._keep(Doc(str(row.get("id") or f"{path.name}/{index}"), text, str(row.get("url") or ""), meta),
                                     len(text.encode()))
        except (OSError, ValueError) as e:  # a corrupt row group: count, keep what was read
            self._skip("corrupt_row_group", path=path)
            _ = e
