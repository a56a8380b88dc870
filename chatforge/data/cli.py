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
    build(args.inputs, args.out, workers=args.workers, config=cfg, quiet=args.quiet, engine=args.engine,
          address=args.address)


def _tokenize(args):
    from chatforge.data.tokenize import tokenize

    tokenize(args.docs, args.tokenizer, args.out, val_fraction=args.val_fraction,
             shard_tokens=args.shard_tokens, overwrite=args.overwrite)


def _factworld(args):
    from chatforge.data.factworld import docs_chars, make_world, renderings_for_share, write_world

    renderings = args.renderings
    if args.share is not None:
        if not args.docs:
            from chatforge.common import ChatforgeError
            raise ChatforgeError("--share needs --docs DOCS (the crawl the fact world is mixed into)")
        people = make_world(args.seen, args.unseen, args.seed)
        renderings = renderings_for_share(people, args.share, docs_chars(args.docs), args.seed)
    info = write_world(args.out, args.seen, args.unseen, renderings, args.seed)
    print(f"fact world: {args.seen} seen + {args.unseen} unseen people, {renderings} biographies per seen person "
          f"({info['pretrain_docs']:,} pretraining docs), {info['questions']} questions -> {args.out}")


def _inspect(args):
    from chatforge.data.tokenize import inspect

    print(inspect(args.shards, args.tokenizer, args.split, args.n))


def register(sub):
    from chatforge.data.extract import BACKENDS  # light: no extraction library is imported here

    p = sub.add_parser("data", help="data pipeline: build, tokenize, inspect")
    p.set_defaults(func=None, _parser=p)
    verbs = p.add_subparsers(dest="verb", metavar="<verb>")

    b = verbs.add_parser("build", help="WARC/HTML/JSONL/text/parquet -> clean deduplicated document shards")
    b.add_argument("inputs", nargs="+", help="files, directories or globs")
    b.add_argument("--out", required=True, help="output directory (docs_*.jsonl.zst + stats.json)")
    b.add_argument("--workers", type=int, default=0, help="worker processes (default: all cores)")
    b.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: a process pool here (default); ray: Ray tasks (pip install 'chatforge[ray]')")
    b.add_argument("--address", help="--engine ray: a Ray cluster address (default: start a local Ray of --workers CPUs)")
    b.add_argument("--extractor", default="fast", choices=list(BACKENDS),
                   help="fast: ours, the default (F1 0.924 at 5.7x trafilatura's speed); trafilatura: FineWeb's")
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

    f = verbs.add_parser("factworld", help="a synthetic fact world: biographies for pretraining, QA, a search corpus")
    f.add_argument("--out", required=True, help="output directory (pretrain/ doc shards, web.jsonl, qa.jsonl, world.json)")
    f.add_argument("--seen", type=int, default=16, help="people whose biographies go into pretraining (default 16)")
    f.add_argument("--unseen", type=int, default=16, help="people never in pretraining (default 16)")
    f.add_argument("--renderings", type=int, default=100, help="biographies per seen person (default 100)")
    f.add_argument("--share", type=float, help="instead of --renderings: the fact world's share of --docs' characters")
    f.add_argument("--docs", help="the `data build` output the fact world is mixed into (for --share)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=_factworld)

    t = verbs.add_parser("tokenize", help="document shards -> token shards (train/val) for pretraining")
    t.add_argument("docs", nargs="+", help="`data build` output directories (several are tokenized together)")
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
