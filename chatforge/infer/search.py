"""Search: a BM25 index over the pipeline's documents, and the `search` tool the engine calls.

Choices, up front:
- SQLite FTS5 (Python's standard library) holds the index: an inverted index with bm25() built in,
  one file on disk, no server, no new dependency, queries in milliseconds at our scale. bm25s would
  be faster on millions of documents but adds numpy-array index files and a dependency for nothing
  we measure here (docs/dependencies.md).
- Documents are cut into passages (paragraphs, joined up to ~PASSAGE_CHARS) at build time, so a hit
  is a snippet the model can read, not a whole book.
- A query is the words of the model's call text, OR-ed and ranked by BM25: a tiny model's query is
  a noisy phrase, and OR ranking still finds the passage that shares the rare words (names). Words
  in more than 2% of passages are dropped first (document frequencies, kept in a keyed table):
  without that, "was" or "the" makes every query rank most of the index (40x slower than bm25s).
- The tool's output is the top-k passages, numbered, cut to a token budget (the tokenizer's count
  when given, else ~4 characters a token), so results never flood a small context window.

`chatforge index build DOCS... --out INDEX` builds it (DOCS: `data build` outputs or JSONL files
with a "text" field); `search_tool(INDEX)` is the tool; `chatforge index query INDEX "words"` tries it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_path

PASSAGE_CHARS = 600
_WORD = re.compile(r"\w+", re.UNICODE)


def _passages(text: str, max_chars: int = PASSAGE_CHARS):
    """Paragraphs joined up to max_chars; a longer paragraph is cut at sentence ends (or hard)."""
    buf = ""
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        while len(para) > max_chars:
            cut = para.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            if buf:
                yield buf
                buf = ""
            yield para[:cut].strip()
            para = para[cut:].strip()
        if buf and len(buf) + len(para) + 1 > max_chars:
            yield buf
            buf = ""
        buf = f"{buf} {para}".strip() if para else buf
    if buf:
        yield buf


def _iter_docs(inputs, stats: dict):
    """(url, text) from doc-shard directories, JSONL files (a "text" field) and plain text
    files; bad JSONL lines are counted and skipped."""
    from chatforge.data.build import doc_shards, read_docs

    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            for shard in doc_shards(p):
                for d in read_docs(shard):
                    stats["docs"] += 1
                    yield d.url or d.id, d.text
        elif p.is_file() and not p.name.endswith((".jsonl", ".json")):  # plain text: one document
            stats["docs"] += 1
            yield p.name, p.read_text(encoding="utf-8", errors="replace")
        elif p.is_file():
            with open(p, encoding="utf-8") as f:
                for line in f:
                    try:
                        o = json.loads(line)
                        text = o["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        stats["bad_lines"] += 1
                        continue
                    stats["docs"] += 1
                    yield str(o.get("url") or o.get("id") or p.name), str(text)
        else:
            raise ChatforgeError(f"{inp} does not exist; pass `data build` directories, JSONL or text files")


def build_index(inputs, out, quiet: bool = False) -> dict:
    """Index every passage of `inputs` into the SQLite file `out` (written atomically)."""
    t0 = time.time()
    n_pass, stats = 0, {"docs": 0, "bad_lines": 0}
    with atomic_path(out) as tmp:
        db = sqlite3.connect(tmp)
        db.execute("CREATE VIRTUAL TABLE passages USING fts5(text, url UNINDEXED)")
        batch = []
        for url, text in _iter_docs(inputs, stats):
            batch += [(p, url) for p in _passages(text)]
            if len(batch) >= 10_000:
                db.executemany("INSERT INTO passages(text, url) VALUES (?, ?)", batch)
                n_pass += len(batch)
                batch = []
        db.executemany("INSERT INTO passages(text, url) VALUES (?, ?)", batch)
        n_pass += len(batch)
        db.execute("INSERT INTO passages(passages) VALUES ('optimize')")
        # document frequencies, copied out of fts5vocab (which scans on every lookup) into a keyed table
        db.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, passages, 'row')")
        db.execute("CREATE TABLE df(term TEXT PRIMARY KEY, doc INTEGER) WITHOUT ROWID")
        db.execute("INSERT INTO df SELECT term, doc FROM temp.vocab")
        info = {"inputs": [str(i) for i in inputs], "docs": stats["docs"], "passages": n_pass,
                "bad_lines": stats["bad_lines"], "seconds": round(time.time() - t0, 2)}
        db.execute("CREATE TABLE info(json TEXT)")
        db.execute("INSERT INTO info VALUES (?)", (json.dumps(info),))
        db.commit()
        db.close()
    if not quiet:
        print(f"indexed {info['docs']:,} documents as {n_pass:,} passages in {info['seconds']:.1f}s -> {out}"
              + (f" ({info['bad_lines']} bad lines skipped)" if info["bad_lines"] else ""))
    return info


class SearchIndex:
    COMMON = 0.02  # query words in more than this share of passages are dropped (unless nothing is left)

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise ChatforgeError(f"search index {path} does not exist; build it with `chatforge index build DOCS --out {path}`")
        self.path = path
        # read-only, shared by threads (the server runs tools from its worker thread) under a lock
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.lock = threading.Lock()
        self.n = json.loads(self.db.execute("SELECT json FROM info").fetchone()[0])["passages"]

    def search(self, query: str, k: int = 3) -> list[dict]:
        """Top-k passages by BM25 for the words of `query` (any of them); [] when it has no words.
        Words common enough to match a large share of passages ("was", "the") are dropped first:
        they barely move BM25 scores but make every query rank most of the index."""
        words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:32]
        if not words:
            return []
        with self.lock:
            try:
                df = dict(self.db.execute(f"SELECT term, doc FROM df WHERE term IN ({','.join('?' * len(words))})",
                                          words).fetchall())
            except sqlite3.OperationalError:  # an index from before the df table: no word is dropped
                df = {w: 1 for w in words}
            words = [w for w in words if df.get(w, 0) > 0]
            if not words:
                return []
            rare = [w for w in words if df[w] <= self.COMMON * self.n] or [min(words, key=df.get)]
            match = " OR ".join('"' + w.replace('"', '') + '"' for w in rare)
            rows = self.db.execute("SELECT text, url, bm25(passages) FROM passages WHERE passages MATCH ? "
                                   "ORDER BY bm25(passages) LIMIT ?", (match, k)).fetchall()
        return [{"text": t, "url": u, "score": -s} for t, u, s in rows]


def format_results(hits: list[dict], max_tokens: int = 160, count_tokens=None) -> str:
    """Numbered snippets, cut to a token budget; what goes between <|output_start|> and <|output_end|>."""
    count = count_tokens or (lambda s: (len(s) + 3) // 4)
    out, used = [], 0
    for i, h in enumerate(hits, 1):
        line = f"[{i}] {h['text']}"
        n = count(line)
        if used + n > max_tokens:
            room = max_tokens - used
            if room < 16:
                break
            line = line[: max(0, room * len(line) // max(n, 1))].rstrip() + " ..."
            out.append(line)
            break
        out.append(line)
        used += n
    return "\n".join(out) if out else "no results"


def search_tool(index, k: int = 2, max_tokens: int = 160, tokenizer=None):
    """The engine's `search` tool over an index path (or SearchIndex)."""
    from chatforge.infer.tools import Tool

    idx = index if isinstance(index, SearchIndex) else SearchIndex(index)
    count = (lambda s: len(tokenizer.encode(s))) if tokenizer is not None else None

    def run(query: str) -> str:
        return format_results(idx.search(query, k), max_tokens, count)
    return Tool("search", "<|search_start|>", "<|search_end|>", run, max_call_tokens=64)


def _build(args):
    build_index(args.docs, args.out)


def _query(args):
    hits = SearchIndex(args.index).search(args.query, args.k)
    for i, h in enumerate(hits, 1):
        print(f"[{i}] {h['score']:.2f} {h['url']}\n    {h['text'][:300]}")
    if not hits:
        print("no results")


def register(sub):
    p = sub.add_parser("index", help="search index: build (BM25 over documents), query")
    p.set_defaults(func=None, _parser=p)
    verbs = p.add_subparsers(dest="verb", metavar="<verb>")
    b = verbs.add_parser("build", help="documents -> a BM25 search index (one SQLite FTS5 file)")
    b.add_argument("docs", nargs="+", help="`data build` output directories and/or JSONL files with a text field")
    b.add_argument("--out", required=True, help="index file to write (e.g. RUN/search.sqlite)")
    b.set_defaults(func=_build)
    q = verbs.add_parser("query", help="print the top passages for a query")
    q.add_argument("index")
    q.add_argument("query")
    q.add_argument("-k", type=int, default=3)
    q.set_defaults(func=_query)
