"""URL filter (FineWeb's first filter): a domain/URL blocklist plus banned words in the URL.

Blocklists are UT1-style text files, one domain (or URL without scheme) per line, optionally
.xz/.gz. The UT1 adult list has 4.5 M domains: instead of a Python set (~400 MB per worker) we
keep a sorted uint64 array of their hashes (36 MB, memory-mappable, shared by forked workers)
and cache it on disk, so a worker starts in milliseconds. A 64-bit hash collision would drop
one innocent domain in ~10^12 lookups; acceptable.

Rules (each counted by name): `blocklisted_domain` (the host or any parent domain is listed),
`blocklisted_url`, `banned_word` (a URL word from the hard list), `soft_banned_words` (>= 2
from the soft list), `banned_subword` (a listed substring of the normalised URL).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from chatforge.data.readers import open_binary
from chatforge.data.steps import Doc, Step

ASSETS = Path(__file__).parent / "assets"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "ignore").strip(), digest_size=8).digest(), "little")


def cache_dir() -> Path:
    d = Path(os.environ.get("CHATFORGE_CACHE", Path.home() / ".cache" / "chatforge"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_hashed_list(path: str | Path, kind: str = "domain") -> np.ndarray:
    """Sorted uint64 hashes of a list file's entries, cached next to other chatforge caches."""
    path = Path(path)
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}|v1".encode()).hexdigest()[:16]
    cached = cache_dir() / f"blocklist-{path.name}-{key}.npy"
    if cached.exists():
        return np.load(cached, mmap_mode="r")
    with open_binary(path) as f:
        lines = f.read().lower().splitlines()
    if kind == "url":
        lines = [normalize_url(x.decode("utf-8", "ignore")).encode("utf-8") for x in lines]
    blake = hashlib.blake2b
    digests = b"".join([blake(x.strip(), digest_size=8).digest() for x in lines if x.strip() and not x.startswith(b"#")])
    hashes = np.frombuffer(digests, dtype="<u8")
    arr = np.unique(np.asarray(hashes, dtype=np.uint64))
    from chatforge.common import atomic_path

    with atomic_path(cached) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    return arr


def normalize_url(url: str) -> str:
    """'https://www.Example.com/a/' -> 'example.com/a' (the UT1 url-list form)."""
    u = url.strip().lower()
    u = re.sub(r"^[a-z]+://", "", u)
    if u.startswith("www."):
        u = u[4:]
    return u.rstrip("/")


def _read_words(name: str) -> set[str]:
    words = set()
    for line in (ASSETS / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            words.add(_NON_ALNUM.sub("", line.lower()))
    words.discard("")
    return words


def _union(arrays: list) -> np.ndarray:
    if not arrays:
        return np.zeros(0, np.uint64)
    return arrays[0] if len(arrays) == 1 else np.unique(np.concatenate(arrays))


def _contains(sorted_arr: np.ndarray, h: int) -> bool:
    if len(sorted_arr) == 0:
        return False
    i = int(np.searchsorted(sorted_arr, np.uint64(h)))
    return i < len(sorted_arr) and int(sorted_arr[i]) == h


class URLFilter(Step):
    name = "url_filter"

    def __init__(self, domain_lists=(), url_lists=(), extra_domains=(), banned_words=True,
                 soft_word_threshold: int = 2):
        super().__init__()
        arrays = [load_hashed_list(p, "domain") for p in domain_lists]
        if extra_domains:
            arrays.append(np.unique(np.asarray([_h64(d.lower()) for d in extra_domains], dtype=np.uint64)))
        self.domains = _union(arrays)
        self.urls = _union([load_hashed_list(p, "url") for p in url_lists])
        self.banned = _read_words("banned_words.txt") if banned_words else set()
        self.soft = _read_words("soft_banned_words.txt") if banned_words else set()
        self.subwords = sorted(_read_words("banned_subwords.txt")) if banned_words else []
        # one alternation regex over all subwords: a single C-level scan per URL
        self._sub_re = re.compile("|".join(map(re.escape, self.subwords))) if self.subwords else None
        self.soft_word_threshold = soft_word_threshold

    def process(self, doc: Doc):
        url = doc.url
        if not url:
            self.stats.counters["no_url"] += 1
            return doc
        try:
            host = (urlsplit(url if "://" in url else "http://" + url).hostname or "").rstrip(".")
        except ValueError:
            host = ""
        parts = host.split(".")
        for i in range(len(parts) - 1):  # the host and each parent domain, not the bare TLD
            if _contains(self.domains, _h64(".".join(parts[i:]))):
                return "blocklisted_domain"
        if _contains(self.urls, _h64(normalize_url(url))):
            return "blocklisted_url"
        words = set(_NON_ALNUM.split(url.lower()))
        if self.banned and not self.banned.isdisjoint(words):
            return "banned_word"
        if self.soft and len(self.soft & words) >= self.soft_word_threshold:
            return "soft_banned_words"
        if self._sub_re is not None and self._sub_re.search(_NON_ALNUM.sub("", url.lower())):
            return "banned_subword"
        return doc
