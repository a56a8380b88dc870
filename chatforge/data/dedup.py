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

Distributed, each band is one bucket: `band_pairs` reads its band of every signature file and
returns the candidate pairs; one union-find (`near_duplicates`) joins all buckets' pairs. The
Ray engine runs the buckets on its workers; the result is the same as one process's.
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


def exact_duplicates(exact_paths: list[Path]) -> np.ndarray:
    """All tasks' exact hashes -> a global status array with EXACT_DUP set (the first copy kept)."""
    hashes = np.concatenate([np.load(p) for p in exact_paths]) if exact_paths else np.zeros(0, np.uint64)
    status = np.zeros(len(hashes), dtype=np.uint8)
    order = np.argsort(hashes, kind="stable")  # stable: the first occurrence comes first
    h = hashes[order]
    same_as_prev = np.zeros(len(h), dtype=bool)
    same_as_prev[1:] = h[1:] == h[:-1]
    status[order[same_as_prev]] = EXACT_DUP
    return status


def band_pairs(sig_paths: list[Path], band: int, rows: int, alive: np.ndarray) -> np.ndarray:
    """One LSH band bucket: [k, 2] global indices of alive documents whose band keys are equal.

    Neighbours in key order are paired, which connects each group of equal keys; the union-find
    in `near_duplicates` needs no more. Bands are independent, so a cluster engine runs one
    bucket per task (each reads only its band's rows of every signature file).
    """
    parts = []
    for p in sig_paths:
        m = np.load(p, mmap_mode="r")
        parts.append(_band_keys(np.asarray(m[band * rows:(band + 1) * rows]).T))
        del m
    keys = np.concatenate(parts)[alive]
    del parts
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    hit = np.flatnonzero(k[1:] == k[:-1])
    ids = alive[order]
    return np.stack([ids[hit], ids[hit + 1]], axis=1) if len(hit) else np.zeros((0, 2), np.int64)


def near_duplicates(status: np.ndarray, alive: np.ndarray, pairs) -> None:
    """Union-find over the band buckets' pairs; marks all but each cluster's first document NEAR_DUP."""
    uf = UnionFind(len(status))
    for pp in pairs:
        for i, j in pp.tolist():
            uf.union(i, j)
    roots = np.array([uf.find(int(i)) for i in alive], dtype=np.int64) if len(alive) else np.zeros(0, np.int64)
    status[alive[roots != alive]] = NEAR_DUP


def signature_counts(sig_paths: list[Path]) -> list[int]:
    return [int(np.load(p, mmap_mode="r").shape[1]) for p in sig_paths]


def find_duplicates(sig_paths: list[Path], exact_paths: list[Path], bands: int, rows: int,
                    exact: bool = True, near: bool = True, map_bands=None) -> list[np.ndarray]:
    """One pass over all tasks' signatures -> per task a uint8 array: KEEP / EXACT_DUP / NEAR_DUP.

    `map_bands(fn, bands, alive)` runs `band_pairs` for every band (a Ray engine passes one that
    spreads the band buckets over its workers); by default they run here, one after another.
    """
    # signature files are band-major [num_perm, n]: one band of one file is a contiguous read,
    # and the memory map is dropped after each band, so resident memory stays one band's worth
    sizes = signature_counts(sig_paths)
    starts = np.cumsum([0] + sizes)
    n = int(starts[-1])
    status = exact_duplicates(exact_paths) if exact and n else np.zeros(n, dtype=np.uint8)
    if near and n:
        alive = np.flatnonzero(status == KEEP)
        if map_bands is None:
            pairs = (band_pairs(sig_paths, b, rows, alive) for b in range(bands))
        else:
            pairs = map_bands(sig_paths, bands, rows, alive)
        near_duplicates(status, alive, pairs)
    return [status[starts[i]:starts[i + 1]].copy() for i in range(len(sizes))]
