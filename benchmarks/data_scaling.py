"""Scaling of `chatforge data build` over CPU cores: the local process pool vs the Ray engine.

Weak scaling: with w workers the input is FILES_PER_WORKER * w hard links of one WARC (the 320
real pages of ../shared/data/web, made by benchmarks/data_pipeline.py's writer), each file its
own build task, so every worker has the same work at every width. pages/s = HTML pages read /
build wall time (all three passes: filter, global dedup, dedup+pii); efficiency(w) =
pages/s(w) / (w * pages/s(1)). Ray is started before each Ray build (its start-up is printed,
not counted) and stopped after. The copies are exact duplicates of each other, so the global
dedup pass sees (and drops) them as it would a crawl's repeats.

    python benchmarks/data_scaling.py --warc web320.warc.gz [--workers 1,2,4,8,16] [--engines local,ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

FILES_PER_WORKER = 3


def one_build(warc: Path, tmp: Path, engine: str, workers: int, extractor: str) -> dict:
    from chatforge.data.build import BuildConfig, build

    inputs = tmp / f"in_{engine}_{workers}"
    inputs.mkdir()
    for i in range(FILES_PER_WORKER * workers):
        os.link(warc, inputs / f"part{i:03d}.warc.gz")
    init = 0.0
    if engine == "ray":
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        init = time.perf_counter() - t
    t = time.perf_counter()
    stats = build([str(inputs)], tmp / f"out_{engine}_{workers}", workers=workers, quiet=True, engine=engine,
                  config=BuildConfig(extractor=extractor, domain_blocklists=(), url_blocklists=()))
    wall = time.perf_counter() - t
    if engine == "ray":
        ray.shutdown()
    shutil.rmtree(inputs)
    pages = stats["steps"][0]["kept"]
    return {"engine": engine, "workers": workers, "pages": pages, "docs_out": stats["documents_out"],
            "wall": wall, "pages_per_s": pages / wall, "init_s": init, "passes": stats["wall_seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warc", required=True)
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--extractor", default="resiliparse")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    widths = [int(x) for x in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        warc = tmp / "src.warc.gz"
        shutil.copy(args.warc, warc)
        for engine in args.engines.split(","):
            for w in widths:
                r = one_build(warc, tmp, engine, w, args.extractor)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{os.cpu_count()} cores, extractor {args.extractor}, {FILES_PER_WORKER} x 320 pages per worker")
    print("| engine | workers | pages | wall s | pages/s | speed-up | efficiency | filter / dedup / finish s |")
    print("|---|---|---|---|---|---|---|---|")
    for engine in args.engines.split(","):
        base = next((r for r in rows if r["engine"] == engine and r["workers"] == widths[0]), None)
        for r in (r for r in rows if r["engine"] == engine):
            up = r["pages_per_s"] / base["pages_per_s"] * widths[0]
            p = r["passes"]
            print(f"| {engine} | {r['workers']} | {r['pages']} | {r['wall']:.1f} | {r['pages_per_s']:.0f} | {up:.2f} | "
                  f"{up / r['workers']:.2f} | {p['filter']:.1f} / {p['dedup']:.1f} / {p['finish']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
