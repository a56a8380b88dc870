"""Streaming text from training inputs: .txt, .jsonl (a text field), their .gz/.zst/.xz, directories.

Texts are yielded one at a time, never the whole corpus at once, so the trainer can count words over
corpora larger than memory. Unreadable or binary files inside a directory are counted and skipped;
a binary or missing file named explicitly is a user error (one-line ChatforgeError).
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from chatforge.common import ChatforgeError

TEXT_SUFFIXES = (".txt", ".md", ".text", ".tokens")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
COMPRESSED_SUFFIXES = (".gz", ".zst", ".xz")
BLOCK_CHARS = 1 << 20  # long plain-text files are yielded in ~1M-character pieces cut at a newline


@dataclass
class CorpusStats:
    files: int = 0
    texts: int = 0
    chars: int = 0
    skipped_files: list[str] = field(default_factory=list)  # "path: why"
    skipped_records: int = 0  # jsonl lines that were not JSON objects with the text field

    def summary(self) -> str:
        s = f"{self.files} files, {self.texts:,} texts, {self.chars:,} chars"
        if self.skipped_files:
            s += f", skipped {len(self.skipped_files)} files"
        if self.skipped_records:
            s += f", skipped {self.skipped_records:,} records"
        return s


def _base_suffix(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix) e.g. ('.jsonl', '.zst') for docs_000.jsonl.zst."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES else ""
    rest = suffixes[:-1] if comp else suffixes
    return (rest[-1] if rest else ""), comp


def _open_binary(path: Path, comp: str):
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".xz":
        return lzma.open(path, "rb")
    if comp == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def _looks_binary(head: bytes) -> bool:
    """NUL bytes or mostly undecodable bytes in the first block: not a text file."""
    if not head:
        return False
    if b"\x00" in head:
        return True
    bad = head.decode("utf-8", errors="replace").count("\ufffd")
    return bad > max(8, len(head) // 100)


def is_corpus_file(path: Path) -> bool:
    fmt, _ = _base_suffix(path)
    return fmt in TEXT_SUFFIXES or fmt in JSONL_SUFFIXES


def list_files(inputs) -> list[tuple[Path, bool]]:
    """Expand inputs into (file, named_explicitly) in a stable (sorted) order."""
    out: list[tuple[Path, bool]] = []
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    f = Path(root) / name
                    if not name.startswith(".") and is_corpus_file(f):
                        out.append((f, False))
        elif p.is_file():
            out.append((p, True))
        else:
            raise ChatforgeError(f"input not found: {p}; give existing files or directories")
    return out


def _text_from_record(obj, text_fields: tuple[str, ...]) -> str | None:
    if not isinstance(obj, dict):
        return None
    parts = [obj[f] for f in text_fields if isinstance(obj.get(f), str)]
    return "\n".join(parts) if parts else None


def iter_file_texts(path: Path, *, text_fields=("text",), stats: CorpusStats | None = None,
                    explicit: bool = True) -> Iterator[str]:
    stats = stats if stats is not None else CorpusStats()
    fmt, comp = _base_suffix(path)
    try:
        raw = _open_binary(path, comp)
        head = raw.read(8192)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
        msg = f"{path}: cannot read ({type(e).__name__}: {e})"
        if explicit:
            raise ChatforgeError(msg + "; check the file is intact") from None
        stats.skipped_files.append(msg)
        return
    if _looks_binary(head):
        raw.close()
        msg = f"{path}: looks binary, not text"
        if explicit:
            raise ChatforgeError(msg + "; give .txt or .jsonl files (optionally .gz/.zst/.xz)")
        stats.skipped_files.append(msg)
        return
    stats.files += 1
    stream = io.TextIOWrapper(_Prepend(head, raw), encoding="utf-8", errors="replace", newline="")
    try:
        if fmt in JSONL_SUFFIXES:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    text = _text_from_record(json.loads(line), text_fields)
                except json.JSONDecodeError:
                    text = None
                if text is None:
                    stats.skipped_records += 1
                    continue
                stats.texts += 1
                stats.chars += len(text)
                yield text
        else:
            while True:
                block = stream.read(BLOCK_CHARS)
                if not block:
                    break
                if len(block) == BLOCK_CHARS:  # cut at a newline so words are not split
                    block += stream.readline()
                stats.texts += 1
                stats.chars += len(block)
                yield block
    except (OSError, EOFError, lzma.LZMAError) as e:  # truncated/corrupt compressed stream
        stats.skipped_files.append(f"{path}: stopped early ({type(e).__name__}: {e})")
    finally:
        stream.close()


class _Prepend(io.RawIOBase):
    """A readable stream that first returns `head`, then the rest of `raw` (we peeked at head)."""

    def __init__(self, head: bytes, raw):
        self._head, self._raw = head, raw

    def readable(self):
        return True

    def readinto(self, b):
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self):
        self._raw.close()
        super().close()


def iter_texts(inputs, *, text_fields=("text",), stats: CorpusStats | None = None) -> Iterator[str]:
    """Every text of every input, streamed. `stats` (optional) is filled in as we go."""
    if isinstance(text_fields, str):
        text_fields = tuple(f.strip() for f in text_fields.split(",") if f.strip())
    for path, explicit in list_files(inputs):
        yield from iter_file_texts(path, text_fields=text_fields, stats=stats, explicit=explicit)
