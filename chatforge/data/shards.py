"""Token shards: the flat binary files the trainer reads.

A shard directory holds, per split ("train", "val"):
    {split}_{k:06d}.bin   header (64 bytes) + the token ids, uint16 or uint32, little-endian
    {split}_{k:06d}.idx   uint64 offsets of each document's first token (its <|bos|>)
and one meta.json (vocab size, dtype, bos id, token/document counts per split).

Every document is written as [bos, tok, tok, ...], so a model sees a document boundary
before each document. Shards are written to a temp file and renamed, so a killed writer
never leaves a half shard behind. Readers memory-map: random access, no loading.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from chatforge.common import ChatforgeError, atomic_path, atomic_write_json

MAGIC = b"CFTOKENS"
VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sIIQQ")  # magic, version, itemsize, n_tokens, n_docs


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def write_shard(path: str | Path, tokens: np.ndarray, doc_offsets: np.ndarray) -> None:
    """Write one shard (and its .idx) atomically."""
    path = Path(path)
    tokens = np.ascontiguousarray(tokens)
    if tokens.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"shard tokens must be uint16 or uint32, got {tokens.dtype}")
    header = _HEADER.pack(MAGIC, VERSION, tokens.dtype.itemsize, len(tokens), len(doc_offsets))
    with atomic_path(path.with_suffix(".idx")) as tmp:
        np.asarray(doc_offsets, dtype="<u8").tofile(tmp)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.ljust(HEADER_BYTES, b"\0"))
            f.write(tokens.astype(tokens.dtype.newbyteorder("<"), copy=False).tobytes())


def read_shard(path: str | Path) -> np.ndarray:
    """Memory-map one shard's tokens (read-only)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:8] != MAGIC:
        raise ChatforgeError(f"{path} is not a chatforge token shard (bad header); rebuild it with `chatforge data tokenize`")
    _, version, itemsize, n_tokens, _ = _HEADER.unpack(head[: _HEADER.size])
    if version != VERSION:
        raise ChatforgeError(f"{path} has shard format v{version}, this chatforge reads v{VERSION}; rebuild the shards")
    dtype = np.dtype("<u2") if itemsize == 2 else np.dtype("<u4")
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def read_doc_offsets(path: str | Path) -> np.ndarray:
    return np.fromfile(Path(path).with_suffix(".idx"), dtype="<u8")


class ShardWriter:
    """Accumulates documents and writes fixed-size shards: `add(ids)` per document, then `close()`."""

    def __init__(self, out_dir, split: str, vocab_size: int, bos_id: int,
                 shard_tokens: int = 50_000_000, start_index: int = 0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split, self.bos_id = split, bos_id
        self.dtype = dtype_for_vocab(vocab_size)
        self.shard_tokens = shard_tokens
        self.index = start_index
        self._chunks: list[np.ndarray] = []
        self._offsets: list[int] = []
        self._n = 0
        self.total_tokens = 0
        self.total_docs = 0
        self.paths: list[Path] = []

    def add(self, ids) -> None:
        arr = np.empty(len(ids) + 1, dtype=self.dtype)
        arr[0] = self.bos_id
        arr[1:] = ids
        self._offsets.append(self._n)
        self._chunks.append(arr)
        self._n += len(arr)
        self.total_tokens += len(arr)
        self.total_docs += 1
        if self._n >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._chunks:
            return
        path = self.out_dir / shard_name(self.split, self.index)
        write_shard(path, np.concatenate(self._chunks), np.asarray(self._offsets, dtype=np.uint64))
        self.paths.append(path)
        self.index += 1
        self._chunks, self._offsets, self._n = [], [], 0

    def close(self) -> None:
        self.flush()


def write_meta(out_dir, *, vocab_size: int, bos_id: int, splits: dict, tokenizer: str | None = None, **extra) -> None:
    """splits: {"train": {"tokens": n, "docs": n, "shards": [names]}, "val": {...}}"""
    meta = {"format": "chatforge-tokens", "version": VERSION, "vocab_size": vocab_size,
            "dtype": dtype_for_vocab(vocab_size).name, "bos_id": bos_id, "tokenizer": tokenizer,
            "splits": splits, **extra}
    atomic_write_json(Path(out_dir) / "meta.json", meta)


class TokenShards:
    """Read-only view of one split of a shard directory, as one long token stream.

    `tokens(start, n)` returns n tokens from global position `start` (crossing shard
    boundaries as needed); `len(self)` is the split's total token count.
    """

    def __init__(self, shard_dir, split: str = "train"):
        self.dir = Path(shard_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            raise ChatforgeError(f"{self.dir} has no meta.json: build token shards with `chatforge data tokenize`")
        self.meta = json.loads(meta_path.read_text())
        self.split = split
        paths = sorted(self.dir.glob(f"{split}_*.bin"))
        if not paths:
            raise ChatforgeError(f"no '{split}' shards in {self.dir}; rebuild with `chatforge data tokenize`")
        self.paths = paths
        self.shards = [read_shard(p) for p in paths]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])
        self.vocab_size = int(self.meta["vocab_size"])
        self.bos_id = int(self.meta["bos_id"])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def tokens(self, start: int, n: int) -> np.ndarray:
        if start < 0 or start + n > len(self):
            raise IndexError(f"tokens [{start}, {start + n}) out of range for {len(self)} tokens")
        out = np.empty(n, dtype=np.int64)
        filled = 0
        k = int(np.searchsorted(self.starts, start, side="right") - 1)
        pos = start - int(self.starts[k])
        while filled < n:
            shard = self.shards[k]
            take = min(n - filled, len(shard) - pos)
            out[filled:filled + take] = shard[pos:pos + take]
            filled += take
            k, pos = k + 1, 0
        return out

    def documents(self):
        """Yield each document's token ids (without its leading bos), in order."""
        for path, shard in zip(self.paths, self.shards):
            offsets = read_doc_offsets(path)
            ends = list(offsets[1:]) + [len(shard)]
            for a, b in zip(offsets, ends):
                yield np.asarray(shard[int(a) + 1:int(b)], dtype=np.int64)
