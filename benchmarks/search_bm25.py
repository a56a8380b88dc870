"""Search index: ours (SQLite FTS5 bm25()) vs bm25s, on the same passages, in one process.

Corpus: a `data build` output (default: the cpu-tiny reference run's docs) plus a fact world's
web.jsonl (every entity's biography). Both indexes see the same passages (`search._passages`).
Measured: index build seconds, mean query milliseconds, and recall@1 on the fact world's
questions (is the asked entity's biography the top hit for the question as the query, and for
the bare name, which is what the SFT data teaches the model to search for).

    python benchmarks/search_bm25.py [--docs runs/cpu-tiny-ref/docs] [--world DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatforge.data.factworld import write_world  # noqa: E402
from chatforge.infer import search  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", default="runs/cpu-tiny-ref/docs")
    ap.add_argument("--world", help="a fact world directory (default: a fresh 16 + 16 one)")
    args = ap.parse_args()
    import bm25s

    tmp = Path(tempfile.mkdtemp())
    world = Path(args.world) if args.world else tmp / "world"
    if not args.world:
        write_world(world, 16, 16, renderings=1)
    inputs = [args.docs, str(world / "web.jsonl")]
    qa = [json.loads(x) for x in (world / "qa.jsonl").read_text().splitlines()]
    web = {json.loads(x)["entity"]: json.loads(x)["url"] for x in (world / "web.jsonl").read_text().splitlines()}
    queries = [(q["question"], q["entity"]) for q in qa] + [(e, e) for e in web]

    # ours
    t0 = time.perf_counter()
    info = search.build_index(inputs, tmp / "i.sqlite", quiet=True)
    ours_build = time.perf_counter() - t0
    idx = search.SearchIndex(tmp / "i.sqlite")
    t0 = time.perf_counter()
    ours_top = [idx.search(q, 1) for q, _ in queries]
    ours_q = (time.perf_counter() - t0) / len(queries)
    ours_hit = [bool(h) and h[0]["url"] == web[e] for h, (_, e) in zip(ours_top, queries)]

    # bm25s on the same passages
    t0 = time.perf_counter()
    passages, urls, stats = [], [], {"docs": 0, "bad_lines": 0}
    for url, text in search._iter_docs(inputs, stats):
        for p in search._passages(text):
            passages.append(p)
            urls.append(url)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords=None, show_progress=False), show_progress=False)
    b_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    b_top = [retriever.retrieve(bm25s.tokenize([q], stopwords=None, show_progress=False), k=1,
                                show_progress=False)[0][0][0] for q, _ in queries]
    b_q = (time.perf_counter() - t0) / len(queries)
    b_hit = [urls[i] == web[e] for i, (_, e) in zip(b_top, queries)]

    n_q = len(qa)
    rows = [("index build (s)", ours_build, b_build),
            ("query, one at a time (ms)", 1000 * ours_q, 1000 * b_q),
            (f"recall@1, question as query ({n_q})", sum(ours_hit[:n_q]) / n_q, sum(b_hit[:n_q]) / n_q),
            (f"recall@1, name as query ({len(web)})", sum(ours_hit[n_q:]) / len(web), sum(b_hit[n_q:]) / len(web))]
    print(f"{info['docs']:,} documents, {info['passages']:,} passages (bm25s: {len(passages):,}); "
          f"bm25s {bm25s.__version__}")
    print("| metric | ours (SQLite FTS5) | bm25s | ratio ours/bm25s |\n|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.4g} | {b:.4g} | {a / b if b else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
