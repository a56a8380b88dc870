"""Encode throughput: ours (tiktoken-backed, batch on all cores) vs HF tokenizers, same vocab.

    python benchmarks/tokenizer_encode.py [--tokenizer DIR] [--mb 20]

Both sides load the *same* tokenizer: ours from its directory, HF from the tokenizer.json we export
there (ids are checked identical), so only the encoder differs. Without --tokenizer, one is trained
(vocab 32,768) on the Gutenberg books in ../shared/data first. Text: real documents from
../shared/data (see tokenizer_train.py). Best of 3 runs each; MB = 10^6 UTF-8 bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_train import real_documents  # noqa: E402

from chatforge.common import shared_data_dir  # noqa: E402


def best_of(fn, n=3):
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--mb", type=float, default=20.0, help="MB of text to encode")
    args = ap.parse_args()
    data = shared_data_dir()
    if data is None:
        sys.exit("../shared/data is absent (set CHATFORGE_SHARED_DATA); this benchmark needs real text")

    from tokenizers import Tokenizer as HFTokenizer

    from chatforge.tokenizer import Tokenizer, train_tokenizer

    if args.tokenizer is None:
        args.tokenizer = Path(tempfile.mkdtemp(prefix="tokenc_"))
        print("training a vocab-32768 tokenizer on the Gutenberg books first ...", flush=True)
        train_tokenizer([data / "text" / "gutenberg"], 32768, args.tokenizer, progress=False)
    ours = Tokenizer.load(args.tokenizer)
    hf = HFTokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    hf.encode_special_tokens = True  # special-token text is plain text, as in ours

    docs, size = [], 0
    for _, d in real_documents(data):
        docs.append(d)
        size += len(d.encode("utf-8"))
        if size >= args.mb * 1e6:
            break
    mb = size / 1e6
    threads = os.cpu_count() or 1
    print(f"text: {len(docs):,} documents, {mb:.1f} MB; machine: {threads} cores; vocab {ours.vocab_size:,}")

    t_ours, ids_ours = best_of(lambda: ours.encode_batch(docs, num_threads=threads))
    t_ours1, _ = best_of(lambda: [ours.encode(d) for d in docs])
    t_hf, enc = best_of(lambda: hf.encode_batch(docs, add_special_tokens=False))
    rows = [("ours encode_batch (tiktoken, %d threads)" % threads, t_ours),
            ("ours encode, 1 thread", t_ours1),
            ("HF tokenizers encode_batch (all cores)", t_hf)]
    if hasattr(hf, "encode_batch_fast"):  # no offsets: HF's fastest path
        t_hf_fast, _ = best_of(lambda: hf.encode_batch_fast(docs, add_special_tokens=False))
        rows.append(("HF tokenizers encode_batch_fast (all cores)", t_hf_fast))
    same = ids_ours == [e.ids for e in enc]
    print(f"identical ids: {same}")
    best_hf = min(t for name, t in rows if name.startswith("HF"))
    print("\n| encoder | seconds | MB/s | ours-batch speedup |\n|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} | {mb / t:.1f} | {t / t_ours:.2f}x |")
    print(f"\nours batch vs best HF: {best_hf / t_ours:.2f}x as fast")


if __name__ == "__main__":
    main()
