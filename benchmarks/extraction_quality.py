"""Extraction quality and speed: trafilatura (FineWeb settings) vs resiliparse main-content vs ours
(`fast`, chatforge/data/extract_fast.py).

Uses the 320 real pages of ../shared/data/web with trafilatura's own evaluation snippets:
for each page, text the main content must contain (`with`) and boilerplate it must not
(`without`). Scores as trafilatura's evaluation does: a found `with` snippet is a true
positive, a missing one a false negative; a found `without` snippet a false positive.

Also per language (fastText lid.176 on each page's `with` snippets: mostly German and English)
and per half of the pages (split by a hash of the URL), so a method tuned on one half can be
reported on the other (our fast extractor's rules were tuned on half A: half B is its held-out score).

Timing is interleaved page by page (each page through every extractor in turn), so load from other
jobs on a shared machine falls on all of them alike and the speed ratios hold even when the
absolute pages/s do not.

    python benchmarks/extraction_quality.py [--limit N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time

from chatforge.common import shared_data_dir
from chatforge.data.extract import extract_resiliparse, extract_trafilatura
from chatforge.data.extract_fast import extract_fast
from chatforge.data.readers import decode_html


def score(texts: dict, expected: dict) -> dict:
    tp = fn = fp = tn = 0
    for url, exp in expected.items():
        text = " ".join((texts.get(url) or "").split())
        for s in exp.get("with", []):
            if " ".join(s.split()) in text:
                tp += 1
            else:
                fn += 1
        for s in exp.get("without", []):
            if " ".join(s.split()) in text:
                fp += 1
            else:
                tn += 1
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9), "accuracy": (tp + tn) / max(tp + tn + fp + fn, 1)}


def split_of(url: str) -> str:
    import hashlib

    return "AB"[int(hashlib.sha1(url.encode()).hexdigest(), 16) % 2]


def page_languages(expected: dict) -> dict:
    from chatforge.data.langid import detect, load_model

    model = load_model()
    return {url: detect(model, " ".join(exp.get("with", [])))[0] for url, exp in expected.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None or not (shared / "web" / "expected-snippets.json").exists():
        print("skipped: ../shared/data/web is absent")
        return 0
    expected = json.loads((shared / "web" / "expected-snippets.json").read_text())
    if args.limit:
        expected = dict(list(expected.items())[: args.limit])
    pages = {}
    for url, exp in expected.items():
        raw = gzip.open(shared / "web" / "pages" / exp["file"], "rb").read()
        pages[url] = decode_html(raw)[0]
    total_bytes = sum(len(h.encode()) for h in pages.values())
    extractors = (("trafilatura (FineWeb settings)", extract_trafilatura), ("resiliparse main_content", extract_resiliparse),
                  ("fast (ours)", extract_fast))
    for _, fn in extractors:
        fn(next(iter(pages.values())))  # warm-up: imports
    texts = {name: {} for name, _ in extractors}
    seconds = dict.fromkeys(texts, 0.0)
    for url, html in pages.items():
        for name, fn in extractors:
            t0 = time.perf_counter()
            try:
                texts[name][url] = fn(html)
            except Exception:
                texts[name][url] = None
            seconds[name] += time.perf_counter() - t0
    rows = [(name, score(texts[name], expected), len(pages) / seconds[name], total_bytes / seconds[name] / 1e6, texts[name])
            for name, _ in extractors]
    print(f"{len(pages)} pages, {total_bytes / 1e6:.1f} MB HTML, 1 core")
    print("| extractor | precision | recall | F1 | accuracy | docs/s | MB/s | speed vs trafilatura |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, dps, mbs, _ in rows:
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['accuracy']:.3f} | {dps:.1f} | {mbs:.2f} "
              f"| {dps / rows[0][2]:.1f}x |")
    langs = page_languages(expected)
    groups = {}
    for lang in ("de", "en"):
        groups[f"{lang} ({sum(v == lang for v in langs.values())} pages)"] = [u for u in expected if langs[u] == lang]
    other = [u for u in expected if langs[u] not in ("de", "en")]
    groups[f"other ({len(other)} pages)"] = other
    for half in "AB":
        urls = [u for u in expected if split_of(u) == half]
        groups[f"half {half} ({len(urls)} pages)"] = urls
    groups[f"all ({len(expected)} pages)"] = list(expected)
    print("\nprecision / recall / F1 by language and by half of the pages")
    print("| pages | " + " | ".join(r[0] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for label, urls in groups.items():
        cells = []
        for r in rows:
            s = score(r[4], {u: expected[u] for u in urls})
            cells.append(f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for r in rows[1:]:
        print(f"{r[0]} / trafilatura: speed {r[2] / rows[0][2]:.1f}x (same run, interleaved); F1 difference {r[1]['f1'] - rows[0][1]['f1']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
