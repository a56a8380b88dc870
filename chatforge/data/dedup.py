"""Deduplication across a whole build: exact (normalized-text hash) and near (MinHash LSH).

FineWeb's parameters by default: word 5-grams, 112 hash functions as 14 bands of 8 rows. Two
documents whose signatures agree on all 8 rows of any band are candidates; candidates are
joined into clusters with union-find and one document per cluster is kept (the first in input
order, so a rebuild keeps the same one).

Memory stays bounded: workers write each input task's signatures to disk (uint32, band-major
[112, n]: 448 bytes per document, never the texts). The global pass then reads one band at a time
(memory-mapped), holding a few 8-byte arrays per document (band keys, sort order, exact hashes,
union-find parents) and sort temporaries. Measured: 2 M documents (8 files of random
signatures) in 12 s with a 245 MB peak RSS; it grows with the document count, never the text.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import xxhash

from chatforge.data.steps import Doc, Step

MERSENNE = np.uint64((1 << 61) - 1)
_PUNCT_RE = re.compile(r"[^\w\s]+")
_DIGIT_RE = re.compile(r"\d")
_WS_RE = re.compile(r"\s+")

KEEP, EXACT_DUP, NEAR_DUP = 0, 1, 2


def normalize(text: str) -> str:
    """Lowercase, strip accents, drop punctuation, digits -> 0, collapse whitespace."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c)) if not text.isascii() else text
    text = _PUNCT_RE.sub(" ", text)
    text = _DIGIT_RE.sub("0", text)
    return _WS_RE.sub(" ", text).strip()


class MinHasher:
    def __init__(self, n_grams: int = 5, bands: int = 14, rows: int = 8, seed: int = 1):
        self.n_grams, self.bands, self.rows = n_grams, bands, rows
        rng = np.random.default_rng(seed)
        n = bands * rows
        # (a*h + b) mod (2^61-1) with h < 2^32 and a, b < 2^32: no uint64 overflow
        self.a = rng.integers(1, 1 << 32, size=(n, 1), dtype=np.uint64)
        self.b = rng.integers(0, 1 << 32, size=(n, 1), dtype=np.uint64)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def signature(self, normalized: str) -> np.ndarray:
        words = normalized.split()
        n = self.n_grams
        if len(words) < n:
            grams = [" ".join(words)]
        else:
            grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        h = np.fromiter((xxhash.xxh32_intdigest(g.encode()) for g in set(grams)), dtype=np.uint64)
        phv = (self.a * h[None, :] + self.b) % MERSENNE
        return (phv.min(axis=1) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


class Signatures(Step):
    """Computes each document's exact hash and MinHash signature; keeps every document.

    The caller collects `take()` after writing the documents, in the same order.
    """

    name = "minhash_signatures"

    def __init__(self, hasher: MinHasher):
        super().__init__()
        self.hasher = hasher
        self.sigs: list[np.ndarray] = []
        self.exact: list[int] = []

    def process(self, doc: Doc):
        norm = normalize(doc.text)
        self.exact.append(xxhash.xxh3_64_intdigest(norm.encode()))
        self.sigs.append(self.hasher.signature(norm))
        return doc

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """(signatures [num_perm, n] uint32, band-major as find_duplicates reads them; exact hashes [n])."""
        sigs = np.ascontiguousarray(np.stack(self.sigs).T) if self.sigs else np.zeros((self.hasher.num_perm, 0), np.uint32)
        exact = np.asarray(self.exact, dtype=np.uint64)
        self.sigs, self.exact = [], []
        return sigs, exact


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:  # path compression
            p[x], x = root, p[x]
        return int(root)

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            # the smaller index becomes the root: clusters keep their first document
            if rx < ry:
                self.parent[ry] = rx
            else:
                self.parent[rx] = ry


def _band_keys(sig_band: np.ndarray) -> np.ndarray:
    """[n, rows] uint32 -> one uint64 key per document (a hash of the band's rows)."""
    rows = sig_band.astype(np.uint64)
    key = np.full(len(rows), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows.shape[1]):
            key ^= rows[:, j] + np.uint64(0x9E3779B97F4A7C15) + (key << np.uint64(6)) + (key >> np.uint64(2))
            key *= np.uint64(0xBF58476D1CE4E5B9)
    return key


def find_duplicates(sig_paths: list[Path], exact_paths: list[Path], bands: int, rows: int,
                    exact: bool = True, near: bool = True) -> list[np.ndarray]:
    """One pass over all tasks' signatures -> per task a uint8 array: KEEP / EXACT_DUP / NEAR_DUP."""
    # signature files are band-major [num_perm, n]: one band of one file is a contiguous read,
    # and the memory map is dropped after each band, so resident memory stays one band's worth
    sizes = [int(np.load(p, mmap_mode="r").shape[1]) for p in sig_paths]
    starts = np.cumsum([0] + sizes)
    n = int(starts[-1])
    status = np.zeros(n, dtype=np.uint8)
    if n == 0:
        return [status[starts[i]:starts[i + 1]] for i in range(len(sizes))]
    if exact:
        hashes = np.concatenate([np.load(p) for p in exact_paths])
        order = np.argsort(hashes, kind="stable")  # stable: the first occurrence comes first
        h = hashes[order]
        same_as_prev = np.zeros(n, dtype=bool)
        same_as_prev[1:] = h[1:] == h[:-1]
        status[order[same_as_prev]] = EXACT_DUP
    if near:
        alive = np.flatnonzero(status == KEEP)
        uf = UnionFind(n)
        for b in range(bands):
            parts = []
            for p in sig_paths:
                m = np.load(p, mmap_mode="r")
                parts.append(_band_keys(np.asarray(m[b * rows:(b + 1) * rows]).T))
                del m
            keys = np.concatenate(parts)[alive]
            del parts
            order = np.argsort(keys, kind="stable")
            k = keys[order]
            hit = np.flatnonzero(k[1:] == k[:-1])
            ids = alive[order]
            for i in hit:
                uf.union(int(ids[i]), int(ids[i + 1]))
        roots = np.array([uf.find(int(i)) for i in alive], dtype=np.int64) if len(alive) else np.zeros(0, np.int64)
        status[alive[roots != alive]] = NEAR_DUP
    return [status[starts[i]:starts[i + 1]].copy() for i in range(len(sizes))]
