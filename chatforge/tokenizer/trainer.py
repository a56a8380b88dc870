"""Our byte-level BPE trainer: regex pre-split, streaming word counts, incremental merges.

Training has two phases:
1. Count words. Every text is split with the GPT-4 (cl100k) regex; each piece ("word") is counted.
   Texts stream through a process pool in batches, so only the table of distinct words is ever in
   memory, never the corpus. Memory is O(distinct words), which grows far slower than the corpus.
2. Merge. Each word is a list of token ids (initially its UTF-8 bytes). We repeatedly merge the most
   frequent adjacent pair into a new token. Instead of recounting all pairs per merge (O(corpus) per
   merge), we keep `pair -> count` and `pair -> words containing it`, and a max-heap of counts with
   lazy invalidation: a merge only touches the words that contain the pair. Counts only *decrease*
   for old pairs, so a stale heap entry is simply re-pushed with its true count when it surfaces.

Ties are broken by the smaller (left id, right id) pair, so the same corpus and settings give the
same merges on any machine, any number of processes, any file order.
If a merge yields bytes that are already a token (possible via a different split), the existing
id is reused, as HF tokenizers' trainer does; the vocab then grows by one merge later.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from typing import Iterable

import regex

from chatforge.common import ChatforgeError

# cl100k (GPT-4) pre-split: contractions, letters with one leading non-letter, digits in groups of
# 1-3, punctuation runs, newlines, whitespace (the last space of a run sticks to the next word).
SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_SPLIT_RE = regex.compile(SPLIT_PATTERN)
BATCH_CHARS = 2 << 20  # texts are sent to worker processes in ~2M-character batches


def _count_batch(texts: list[str]) -> Counter:
    c: Counter = Counter()
    findall = _SPLIT_RE.findall
    for t in texts:
        c.update(findall(t))
    return c


def _batches(texts: Iterable[str], batch_chars: int):
    batch, size = [], 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def count_words(texts: Iterable[str], *, num_proc: int | None = None, progress: bool = True,
                batch_chars: int = BATCH_CHARS, max_words: int | None = None) -> Counter:
    """Split every text with SPLIT_PATTERN and count the pieces (as str). Streams; all cores.

    Memory is O(distinct words). For unbounded web-scale input set `max_words`: whenever the table
    outgrows it, the rarest words are dropped (count 1 first, then 2, ...) until it is under 3/4 of
    it. Merges are then approximate for the rarest words only; results stay deterministic.
    """
    num_proc = num_proc or os.cpu_count() or 1
    total: Counter = Counter()
    chars = 0
    pruned = 0
    t0 = time.time()
    bar = _progress(progress, desc="counting words", unit="MB")

    def add(batch_counter, n_chars):
        nonlocal chars
        nonlocal pruned
        total.update(batch_counter)  # C-speed dict update when `total` is still empty
        chars += n_chars
        if max_words and len(total) > max_words:
            floor = 1
            while len(total) > max_words * 3 // 4:
                for w in [w for w, c in total.items() if c <= floor]:
                    del total[w]
                    pruned += 1
                floor += 1
        if bar is not None:
            bar.update(n_chars / 1e6)

    batches = _batches(texts, batch_chars)
    first = next(batches, None)
    second = next(batches, None) if first is not None else None
    if num_proc <= 1 or second is None:  # one batch: a process pool would only add start-up time
        for batch in ([first] if first else []) + ([second] if second else []):
            add(_count_batch(batch), sum(map(len, batch)))
        for batch in batches:
            add(_count_batch(batch), sum(map(len, batch)))
    else:
        # Pool.imap would read the whole input ahead (no backpressure), so we keep at most
        # 2 batches per process in flight: memory stays bounded however large the corpus is.
        # forkserver: never forks this (possibly multi-threaded: torch, tqdm) process itself
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(num_proc) as pool:
            pending: deque = deque()
            for batch in itertools.chain([first, second], batches):
                pending.append((pool.apply_async(_count_batch, (batch,)), sum(map(len, batch))))
                if len(pending) >= 2 * num_proc:
                    res, n = pending.popleft()
                    add(res.get(), n)
            while pending:
                res, n = pending.popleft()
                add(res.get(), n)
    if bar is not None:
        bar.close()
    if progress:
        print(f"counted {len(total):,} distinct words in {chars / 1e6:.1f}M chars "
              f"({time.time() - t0:.1f}s)" + (f"; pruned {pruned:,} rare words" if pruned else ""),
              file=sys.stderr)
    return total


def _progress(enabled: bool, **kw):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(file=sys.stderr, mininterval=0.5, bar_format="{desc}: {n:.1f}{unit} [{elapsed}, {rate_fmt}]"
                if kw.get("unit") == "MB" else None, **kw)


def learn_merges(word_counts: dict, n_tokens: int, *, progress: bool = True):
    """Learn up to `n_tokens` new tokens by BPE over `word_counts` ({str|bytes word: count}).

    Returns (merges, token_bytes): merges is a list of (left_id, right_id, new_id) in the order
    learned; token_bytes[i] is the byte string of token i (ids 0..255 are the single bytes).
    """
    words: list[list[int]] = []
    counts: list[int] = []
    for w, c in word_counts.items():
        b = w.encode("utf-8", errors="replace") if isinstance(w, str) else bytes(w)
        if len(b) >= 2 and c > 0:  # single bytes have no pairs
            words.append(list(b))
            counts.append(c)

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], list[int]] = {}  # pair -> words that (may) contain it
    for wi, (w, c) in enumerate(zip(words, counts)):
        for p in zip(w, w[1:]):
            if p in pair_count:
                pair_count[p] += c
                where[p].append(wi)  # duplicates are harmless: a word without the pair is skipped
            else:
                pair_count[p] = c
                where[p] = [wi]
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([i]) for i in range(256)]
    bytes_to_id = {tb: i for i, tb in enumerate(token_bytes)}
    merges: list[tuple[int, int, int]] = []
    target = 256 + n_tokens
    bar = _progress(progress, desc="merging", total=n_tokens, unit="tok")
    while len(token_bytes) < target and heap:
        negc, a, b = heapq.heappop(heap)
        cur = pair_count.get((a, b), 0)
        if cur != -negc:  # stale entry: the pair was touched by a merge since it was pushed
            if cur > 0:
                heapq.heappush(heap, (-cur, a, b))
            continue
        new_b = token_bytes[a] + token_bytes[b]
        nid = bytes_to_id.get(new_b)
        if nid is None:
            nid = len(token_bytes)
            token_bytes.append(new_b)
            bytes_to_id[new_b] = nid
            if bar is not None:
                bar.update(1)
        merges.append((a, b, nid))

        touched = set()
        for wi in where.pop((a, b)):
            w = words[wi]
            if a not in w:
                continue
            n = len(w)
            new = []
            i = 0
            found = False
            while i < n:
                x = w[i]
                if x == a and i + 1 < n and w[i + 1] == b:
                    new.append(nid)
                    i += 2
                    found = True
                else:
                    new.append(x)
                    i += 1
            if not found:
                continue
            c = counts[wi]
            for p in zip(w, w[1:]):
                pair_count[p] -= c
            for p in zip(new, new[1:]):
                if p in pair_count:
                    pair_count[p] += c
                else:
                    pair_count[p] = c
                if p[0] == nid or p[1] == nid:
                    touched.add(p)
                    lst = where.get(p)
                    if lst is None:
                        where[p] = [wi]
                    elif lst[-1] != wi:
                        lst.append(wi)
            words[wi] = new
        del pair_count[(a, b)]
        # Only pairs containing the new token can have grown; push their true counts.
        for p in sorted(touched):
            c = pair_count[p]
            if c > 0:
                heapq.heappush(heap, (-c, p[0], p[1]))
    if bar is not None:
        bar.close()
    return merges, token_bytes


def check_vocab_size(vocab_size: int, n_special: int) -> int:
    """Number of merged tokens to learn for a total vocab of `vocab_size` (specials included)."""
    lo = 256 + n_special
    if vocab_size < lo:
        raise ChatforgeError(f"vocab size {vocab_size} is too small: it must be at least {lo} "
                             f"(256 byte tokens + {n_special} special tokens)")
    if vocab_size > 1_000_000:
        raise ChatforgeError(f"vocab size {vocab_size} is too large; use at most 1,000,000")
    return vocab_size - lo


def train_from_texts(texts: Iterable[str], vocab_size: int, *, num_proc: int | None = None,
                     progress: bool = True, meta: dict | None = None, max_words: int | None = None):
    """Train on an iterable of texts; returns a Tokenizer (not saved)."""
    from chatforge.tokenizer.special import SPECIAL_TOKENS
    from chatforge.tokenizer.tokenizer import Tokenizer

    n_tokens = check_vocab_size(vocab_size, len(SPECIAL_TOKENS))
    t0 = time.time()
    counts = count_words(texts, num_proc=num_proc, progress=progress, max_words=max_words)
    if not counts:
        raise ChatforgeError("the corpus is empty: no text found in the inputs; "
                             "give .txt/.jsonl files (optionally .gz/.zst/.xz) or directories of them")
    t1 = time.time()
    merges, token_bytes = learn_merges(counts, n_tokens, progress=progress)
    t2 = time.time()
    learned = len(token_bytes) - 256
    if learned < n_tokens and progress:
        print(f"note: the corpus only supports {learned} merged tokens (asked for {n_tokens}); "
              f"vocab size is {len(token_bytes) + len(SPECIAL_TOKENS)}", file=sys.stderr)
    info = dict(meta or {})
    info.update({
        "requested_vocab_size": vocab_size,
        "distinct_words": len(counts),
        "corpus_words": sum(counts.values()),
        "count_seconds": round(t1 - t0, 2),
        "merge_seconds": round(t2 - t1, 2),
    })
    return Tokenizer(merges, pattern=SPLIT_PATTERN, special_tokens=SPECIAL_TOKENS, meta=info)


def train_tokenizer(inputs, vocab_size: int = 32768, out_dir=None, *, text_fields=("text",),
                    num_proc: int | None = None, progress: bool = True, max_words: int | None = None):
    """Train our BPE on `inputs` (files/dirs: .txt, .jsonl, .gz/.zst/.xz) and save to `out_dir`.

    Returns the Tokenizer (with `.path` set when saved).
    """
    from chatforge.tokenizer.corpus import CorpusStats, iter_texts

    check_vocab_size(vocab_size, 20)
    stats = CorpusStats()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    try:
        tok = train_from_texts(iter_texts(inputs, text_fields=text_fields, stats=stats), vocab_size,
                               num_proc=num_proc, progress=progress, max_words=max_words,
                               meta={"inputs": list(map(str, inputs))})
    except ChatforgeError as e:
        if stats.skipped_files or stats.skipped_records:  # say why the corpus came out empty
            why = f"skipped {len(stats.skipped_files)} files, {stats.skipped_records} jsonl records"
            if stats.skipped_files:
                why += f", e.g. {stats.skipped_files[0]}"
            if stats.skipped_records:
                fields = text_fields if isinstance(text_fields, str) else ",".join(text_fields)
                why += f" (jsonl records need a string field: {fields})"
            raise ChatforgeError(f"{e} ({why})") from None
        raise
    tok.meta.update({"files": stats.files, "texts": stats.texts, "chars": stats.chars,
                     "skipped_files": stats.skipped_files[:100], "skipped_records": stats.skipped_records})
    if progress:
        print(f"corpus: {stats.summary()}", file=sys.stderr)
        for s in stats.skipped_files[:10]:
            print(f"  skipped {s}", file=sys.stderr)
    if out_dir is not None:
        tok.save(out_dir)
    return tok
