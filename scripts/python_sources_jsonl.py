"""Python source files under some directories -> one JSONL document per file, for `chatforge data build`.

    python scripts/python_sources_jsonl.py OUT.jsonl DIR [DIR ...] [--max-bytes 1000000]

The pretraining quality run (docs/benchmarks.md) had only ~4M tokens of prose offline; the Python
sources and docstrings of the installed packages are real text that any machine holds. Files that
are not UTF-8, or larger than --max-bytes (generated tables), are counted and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--max-bytes", type=int, default=1_000_000)
    args = ap.parse_args()
    kept = skipped = size = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for root in args.dirs:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    if not name.endswith(".py"):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        if os.path.getsize(path) > args.max_bytes:
                            raise ValueError("too large")
                        with open(path, encoding="utf-8") as src:
                            text = src.read()
                    except (OSError, UnicodeDecodeError, ValueError):
                        skipped += 1
                        continue
                    if not text.strip():
                        continue
                    f.write(json.dumps({"id": path, "url": "file://" + path, "text": text}) + "\n")
                    kept += 1
                    size += len(text.encode())
    print(f"{kept} files ({size / 1e6:.1f} MB) -> {args.out}; {skipped} skipped (not UTF-8 or > {args.max_bytes} bytes)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
