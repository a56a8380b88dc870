"""`chatforge data tokenize` / `inspect`: document shards -> flat token shards (see shards.py).

Each document becomes [<|bos|>, ids...] in a train or a val shard. The split is decided per
document by a hash of its id (stable across reruns and independent of worker count), so
`val_fraction` of the documents, never parts of one, land in val. Encoding runs on all cores:
tiktoken's batch encoder releases the GIL and spreads a batch over threads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xxhash

from chatforge.common import ChatforgeError
from chatforge.data.build import doc_shards, read_docs
from chatforge.data.shards import ShardWriter, TokenShards, write_meta


def load_tokenizer(tok):
    if not isinstance(tok, (str, Path)):
        return tok  # any object with the Tokenizer API
    from chatforge.tokenizer import Tokenizer

    return Tokenizer.load(tok)


def is_val(doc_id: str, val_fraction: float) -> bool:
    return val_fraction > 0 and xxhash.xxh64_intdigest(doc_id.encode()) / 2**64 < val_fraction


def tokenize(docs_dir, tokenizer, out_dir, val_fraction: float = 0.01, batch_docs: int = 512,
             shard_tokens: int = 50_000_000, overwrite: bool = False, num_threads: int | None = None,
             quiet: bool = False) -> dict:
    """Python API of `chatforge data tokenize`. Returns the meta.json content."""
    from tqdm import tqdm

    tok = load_tokenizer(tokenizer)
    if not 0 <= val_fraction < 1:
        raise ChatforgeError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    out = Path(out_dir)
    if out.exists() and any(out.glob("*.bin")):
        if not overwrite:
            raise ChatforgeError(f"{out} already holds token shards; pass --overwrite or choose a new --out")
        for p in list(out.glob("train_*.bin")) + list(out.glob("val_*.bin")):
            p.unlink()
            p.with_suffix(".idx").unlink(missing_ok=True)
    # several doc directories (e.g. the crawl and the fact world) tokenize into one set of shards
    dirs = [docs_dir] if isinstance(docs_dir, (str, Path)) else list(docs_dir)
    paths = [p for d in dirs for p in doc_shards(d)]
    writers = {s: ShardWriter(out, s, tok.vocab_size, tok.bos_id, shard_tokens=shard_tokens) for s in ("train", "val")}
    t0 = time.perf_counter()
    n_chars = 0
    bar = tqdm(desc="tokenize", unit="doc", disable=quiet)

    def flush(batch):
        nonlocal n_chars
        ids = tok.encode_batch([d.text for d in batch], num_threads=num_threads) if num_threads else tok.encode_batch([d.text for d in batch])
        for d, x in zip(batch, ids):
            writers["val" if is_val(d.id, val_fraction) else "train"].add(np.asarray(x))
            n_chars += len(d.text)
        bar.update(len(batch))

    batch = []
    for p in paths:
        for d in read_docs(p):
            batch.append(d)
            if len(batch) >= batch_docs:
                flush(batch)
                batch = []
    if batch:
        flush(batch)
    bar.close()
    for w in writers.values():
        w.close()
    seconds = time.perf_counter() - t0
    splits = {s: {"tokens": w.total_tokens, "docs": w.total_docs, "shards": [p.name for p in w.paths]}
              for s, w in writers.items()}
    if splits["train"]["docs"] == 0:
        raise ChatforgeError(f"no documents in {docs_dir} went to train (val fraction {val_fraction}); lower --val-fraction")
    total = sum(s["tokens"] for s in splits.values())
    tok_path = getattr(tok, "path", None)
    write_meta(out, vocab_size=tok.vocab_size, bos_id=tok.bos_id, splits=splits,
               tokenizer=str(Path(tok_path).resolve()) if tok_path else None,
               source=",".join(str(Path(d).resolve()) for d in dirs), val_fraction=val_fraction,
               chars=n_chars, seconds=round(seconds, 3), tokens_per_second=round(total / max(seconds, 1e-9)))
    import json

    meta = json.loads((out / "meta.json").read_text())
    if not quiet:
        print(f"{total:,} tokens ({splits['train']['tokens']:,} train / {splits['val']['tokens']:,} val) from "
              f"{splits['train']['docs'] + splits['val']['docs']:,} documents in {seconds:.1f}s "
              f"({total / max(seconds, 1e-9):,.0f} tokens/s, {n_chars / max(total, 1):.2f} chars/token) -> {out}")
    return meta


def inspect(shard_dir, tokenizer=None, split: str = "train", n: int = 3, chars: int = 400) -> str:
    """A human-readable look at a shard directory: counts and the first n documents decoded."""
    ts = TokenShards(shard_dir, split)
    tok_path = tokenizer or ts.meta.get("tokenizer")
    if not tok_path:
        raise ChatforgeError("this shard directory does not record its tokenizer; pass --tokenizer")
    tok = load_tokenizer(tok_path)
    meta = ts.meta
    lines = [f"{shard_dir}: vocab {meta['vocab_size']:,} ({meta['dtype']}), bos {meta['bos_id']}"]
    for s, info in meta["splits"].items():
        lines.append(f"  {s}: {info['tokens']:,} tokens, {info['docs']:,} documents, {len(info['shards'])} shard(s)")
    for i, ids in enumerate(ts.documents()):
        if i >= n:
            break
        text = tok.decode(ids.tolist())
        more = f" ... (+{len(text) - chars} chars)" if len(text) > chars else ""
        lines.append(f"--- {split} document {i}: {len(ids):,} tokens ---\n{text[:chars]}{more}")
    return "\n".join(lines)
