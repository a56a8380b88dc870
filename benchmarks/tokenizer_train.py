"""Train vocab 32,768 with our BPE trainer and with HF `tokenizers` on the same real text.

    python benchmarks/tokenizer_train.py [--max-mb 100] [--vocab-size 32768]

Corpus: the real text in ../shared/data (Project Gutenberg books, T0 prompts, hh-rlhf dialogues,
GSM8K, WikiText-2, tinyshakespeare), up to --max-mb. Every 20th document is held out for measuring
compression. Each trainer runs in its own subprocess (peak memory = that process tree's max RSS,
the corpus in memory included for both), on all cores. HF is configured like ours: ByteLevel BPE,
the same cl100k split regex, the same 20 special tokens, the same total vocab.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatforge.common import shared_data_dir
from chatforge.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN

HOLD_OUT_EVERY = 20


def _chunks(text: str, size: int = 20_000):
    """Split a long text into ~size-char documents at paragraph breaks."""
    start = 0
    while start < len(text):
        end = text.find("\n\n", start + size)
        end = len(text) if end < 0 else end + 2
        yield text[start:end]
        start = end


def real_documents(data: Path):
    """(source, document) pairs from ../shared/data, interleaved so any prefix mixes sources."""
    def gutenberg():
        for p in sorted((data / "text" / "gutenberg").glob("*.txt.xz")):
            yield from _chunks(lzma.open(p, "rt", encoding="utf-8").read())

    def plain():
        for name in ("tinyshakespeare.txt", "wikitext-2-valid.tokens.txt", "wikitext-2-test.tokens.txt"):
            yield from _chunks((data / "text" / name).read_text(encoding="utf-8"))

    def t0():
        with lzma.open(data / "instructions" / "t0-train-50k.jsonl.xz", "rt", encoding="utf-8") as f:
            for line in f:
                o = json.loads(line)
                yield o["prompt"] + o["completion"]

    def hh():
        with gzip.open(data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                o = json.loads(line)
                yield o["chosen"]
                yield o["rejected"]

    def gsm8k():
        for split in ("train", "test"):
            with open(data / "gsm8k" / f"{split}.jsonl", encoding="utf-8") as f:
                for line in f:
                    o = json.loads(line)
                    yield o["question"] + "\n" + o["answer"]

    sources = {"gutenberg": gutenberg(), "wikitext+shakespeare": plain(), "t0": t0(), "hh-rlhf": hh(),
               "gsm8k": gsm8k()}
    while sources:
        for name in list(sources):
            try:
                yield name, next(sources[name])
            except StopIteration:
                del sources[name]


def build_corpus(max_mb: float, workdir: Path) -> dict:
    data = shared_data_dir()
    if data is None:
        sys.exit("../shared/data is absent (set CHATFORGE_SHARED_DATA); this benchmark needs real text")
    train, held, per_source = [], [], {}
    size = 0
    for k, (src, doc) in enumerate(real_documents(data)):
        n = len(doc.encode("utf-8"))
        if size + n > max_mb * 1e6:
            break
        size += n
        per_source[src] = per_source.get(src, 0) + n
        (held if k % HOLD_OUT_EVERY == 0 else train).append(doc)
    for name, docs in (("train", train), ("heldout", held)):
        with open(workdir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    return {"bytes": size, "per_source": per_source,
            "train_docs": len(train), "train_bytes": sum(len(d.encode()) for d in train),
            "heldout_docs": len(held), "heldout_bytes": sum(len(d.encode()) for d in held)}


def load_docs(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def peak_rss_mb() -> float:
    """Max RSS of this process and of its (waited-for) children, in MB."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (self_kb + kids_kb) / 1024


# ---- workers (each runs in its own subprocess) -------------------------------------------------------
def worker_ours(docs, vocab_size, out):
    from chatforge.tokenizer import train_from_texts

    tok = train_from_texts(docs, vocab_size, progress=False)
    tok.save(out)


def hf_tokenizer_for_training():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def worker_hf(docs, vocab_size, out):
    from tokenizers import pre_tokenizers, trainers

    tok = hf_tokenizer_for_training()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    Path(out).mkdir(parents=True, exist_ok=True)
    tok.save(str(Path(out) / "tokenizer.json"))


def run_worker(which: str, corpus: Path, vocab_size: int, out: Path) -> dict:
    docs = load_docs(corpus)
    rss_loaded = peak_rss_mb()
    t0 = time.perf_counter()
    {"ours": worker_ours, "hf": worker_hf}[which](docs, vocab_size, out)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": rss_loaded}


def spawn(which: str, corpus: Path, vocab_size: int, out: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--worker", which, "--corpus", str(corpus),
                        "--vocab-size", str(vocab_size), "--out", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{which} worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bytes_per_token(held: list[str], ours_dir: Path, hf_dir: Path) -> tuple[float, float]:
    from tokenizers import Tokenizer as HFTokenizer

    from chatforge.tokenizer import Tokenizer

    n_bytes = sum(len(d.encode("utf-8")) for d in held)
    ours = sum(map(len, Tokenizer.load(ours_dir).encode_batch(held)))
    hf = sum(len(e.ids) for e in HFTokenizer.from_file(str(hf_dir / "tokenizer.json")).encode_batch(held))
    return n_bytes / ours, n_bytes / hf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-mb", type=float, default=100.0)
    ap.add_argument("--vocab-size", type=int, default=32768)
    ap.add_argument("--workdir", type=Path, default=None, help="keep corpus and tokenizers here")
    ap.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.corpus, args.vocab_size, args.out)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tokbench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = build_corpus(args.max_mb, workdir)
    print(f"corpus: {info['bytes'] / 1e6:.1f} MB of real text from ../shared/data "
          + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in info["per_source"].items()))
    print(f"train: {info['train_docs']:,} docs, {info['train_bytes'] / 1e6:.1f} MB; held out: "
          f"{info['heldout_docs']:,} docs, {info['heldout_bytes'] / 1e6:.1f} MB (every {HOLD_OUT_EVERY}th doc)")
    print(f"machine: {os.cpu_count()} cores; vocab {args.vocab_size:,} incl. {len(SPECIAL_TOKENS)} specials")

    results = {}
    for which in ("ours", "hf"):
        results[which] = spawn(which, workdir / "train.jsonl", args.vocab_size, workdir / which)
        print(f"  {which}: {results[which]['seconds']:.1f}s", flush=True)
    bpt_ours, bpt_hf = bytes_per_token(load_docs(workdir / "heldout.jsonl"), workdir / "ours", workdir / "hf")
    o, h = results["ours"], results["hf"]
    rows = [
        ("train wall time (s)", f"{o['seconds']:.1f}", f"{h['seconds']:.1f}", o["seconds"] / h["seconds"]),
        ("peak RSS (MB, corpus incl.)", f"{o['peak_rss_mb']:.0f}", f"{h['peak_rss_mb']:.0f}",
         o["peak_rss_mb"] / h["peak_rss_mb"]),
        ("RSS after loading corpus (MB)", f"{o['rss_after_load_mb']:.0f}", f"{h['rss_after_load_mb']:.0f}",
         o["rss_after_load_mb"] / h["rss_after_load_mb"]),
        ("held-out bytes/token", f"{bpt_ours:.4f}", f"{bpt_hf:.4f}", bpt_ours / bpt_hf),
    ]
    print("\n| metric | ours | HF tokenizers | ratio ours/HF |\n|---|---|---|---|")
    for name, a, b, r in rows:
        print(f"| {name} | {a} | {b} | {r:.2f} |" if "bytes/token" not in name else
              f"| {name} | {a} | {b} | {r:.4f} |")
    print(f"\n(tokenizers kept in {workdir})")


if __name__ == "__main__":
    main()
