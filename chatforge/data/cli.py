"""CLI for the data stage: `chatforge data build | tokenize | inspect`."""

from __future__ import annotations


def _build(args):
    from chatforge.data.build import BuildConfig, build

    cfg = BuildConfig(extractor=args.extractor, extract_timeout=args.extract_timeout,
                      languages=tuple(x for x in args.languages.split(",") if x) if args.languages != "all" else (),
                      language_threshold=args.language_threshold, text_key=args.text_key,
                      text_chunk_words=args.chunk_words, pii=not args.no_pii,
                      exact_dedup=not args.no_dedup, minhash_dedup=not args.no_dedup)
    if args.blocklist is not None:
        cfg.domain_blocklists = tuple(args.blocklist)
        cfg.url_blocklists = ()
    if args.no_quality:
        cfg.gopher_repetition = cfg.gopher_quality = cfg.c4 = cfg.fineweb_quality = False
    build(args.inputs, args.out, workers=args.workers, config=cfg, quiet=args.quiet)


def _tokenize(args):
    from chatforge.data.tokenize import tokenize

    tokenize(args.docs, args.tokenizer, args.out, val_fraction=args.val_fraction,
             shard_tokens=args.shard_tokens, overwrite=args.overwrite)


def _inspect(args):
    from chatforge.data.tokenize import inspect

    print(inspect(args.shards, args.tokenizer, args.split, args.n))


def register(sub):
    p = sub.add_parser("data", help="data pipeline: build, tokenize, inspect")
    p.set_defaults(func=None, _parser=p)
    verbs = p.add_subparsers(dest="verb", metavar="<verb>")

    b = verbs.add_parser("build", help="WARC/HTML/JSONL/text/parquet -> clean deduplicated document shards")
    b.add_argument("inputs", nargs="+", help="files, directories or globs")
    b.add_argument("--out", required=True, help="output directory (docs_*.jsonl.zst + stats.json)")
    b.add_argument("--workers", type=int, default=0, help="worker processes (default: all cores)")
    b.add_argument("--extractor", default="trafilatura", choices=["trafilatura", "resiliparse"])
    b.add_argument("--extract-timeout", type=float, default=1.0, help="seconds per page (default 1)")
    b.add_argument("--languages", default="en", help="comma-separated languages to keep, or 'all' (default en)")
    b.add_argument("--language-threshold", type=float, default=0.65)
    b.add_argument("--blocklist", action="append", help="domain blocklist file (repeatable; default: UT1 adult list from ../shared/data)")
    b.add_argument("--text-key", default="text", help="text field of JSONL/parquet inputs")
    b.add_argument("--chunk-words", type=int, default=2000, help="plain-text inputs: words per document")
    b.add_argument("--no-quality", action="store_true", help="skip Gopher/C4/FineWeb quality filters")
    b.add_argument("--no-dedup", action="store_true")
    b.add_argument("--no-pii", action="store_true")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_build)

    t = verbs.add_parser("tokenize", help="document shards -> token shards (train/val) for pretraining")
    t.add_argument("docs", help="a `data build` output directory")
    t.add_argument("--tokenizer", required=True, help="tokenizer directory")
    t.add_argument("--out", required=True, help="token shard directory")
    t.add_argument("--val-fraction", type=float, default=0.01)
    t.add_argument("--shard-tokens", type=int, default=50_000_000)
    t.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    t.set_defaults(func=_tokenize)

    i = verbs.add_parser("inspect", help="decode a sample of a token shard directory")
    i.add_argument("shards")
    i.add_argument("--tokenizer", help="default: the one recorded in meta.json")
    i.add_argument("--split", default="train")
    i.add_argument("-n", type=int, default=3, help="documents to show")
    i.set_defaults(func=_inspect)
