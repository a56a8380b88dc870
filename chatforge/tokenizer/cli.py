"""`chatforge tokenizer train | encode | show | report`."""

from __future__ import annotations

import sys
from pathlib import Path

from chatforge.common import ChatforgeError


def _text_arg(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def _allowed(args):
    return "all" if args.allow_special else ()


def cmd_train(args):
    import time

    from chatforge.tokenizer.trainer import train_tokenizer

    t0 = time.time()
    tok = train_tokenizer(args.inputs, args.vocab_size, args.out, text_fields=args.text_field,
                          num_proc=args.num_proc, progress=not args.quiet, max_words=args.max_words)
    print(f"trained vocab {tok.vocab_size:,} ({len(tok.merges):,} merges) on "
          f"{tok.meta.get('chars', 0):,} chars in {time.time() - t0:.1f}s -> {tok.path}")
    return 0


def cmd_encode(args):
    from chatforge.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(args.dir)
    print(" ".join(map(str, tok.encode(_text_arg(args.text), allowed_special=_allowed(args)))))
    return 0


def cmd_show(args):
    from chatforge.common import atomic_write_text
    from chatforge.tokenizer.show import ansi, html_page, stats_line
    from chatforge.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(args.dir)
    text = _text_arg(args.text)
    ids = tok.encode(text, allowed_special=_allowed(args))
    if sys.stdout.isatty() or args.color:
        print(ansi(tok, ids))
    else:  # piped: show the token boundaries as | instead of colours
        from chatforge.tokenizer.show import token_pieces

        print("|".join(token_pieces(tok, ids)))
    print(stats_line(text, ids))
    if args.ids:
        print(" ".join(map(str, ids)))
    if args.html:
        atomic_write_text(args.html, html_page(tok, text, ids))
        print(f"wrote {args.html}")
    return 0


def cmd_report(args):
    from chatforge.tokenizer.corpus import iter_texts
    from chatforge.tokenizer.report import load_any, report_text
    from chatforge.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(args.dir)
    others = {str(d): load_any(d) for d in args.compare}
    texts, chars = [], 0
    for t in iter_texts(args.text, text_fields=args.text_field):
        texts.append(t)
        chars += len(t)
        if chars >= args.max_chars:
            break
    if not texts:
        raise ChatforgeError(f"no text found in {', '.join(map(str, args.text))}; "
                             "give a .txt/.jsonl file (optionally .gz/.zst/.xz)")
    print(report_text(tok, texts, others, name=str(args.dir)))
    return 0


def register(sub):
    p = sub.add_parser("tokenizer", help="byte-level BPE tokenizer: train, encode, show, report")
    p.set_defaults(_parser=p, func=None)
    verbs = p.add_subparsers(dest="verb", metavar="<verb>")

    t = verbs.add_parser("train", help="train our BPE on text files / directories")
    t.add_argument("inputs", nargs="+", type=Path, help=".txt/.jsonl files (or .gz/.zst/.xz of them) or dirs")
    t.add_argument("--vocab-size", type=int, default=32768, help="total vocab incl. 20 special tokens")
    t.add_argument("--out", type=Path, required=True, help="tokenizer directory to write")
    t.add_argument("--text-field", default="text", help="jsonl field(s) holding text, comma-separated")
    t.add_argument("--num-proc", type=int, default=None, help="processes for word counting (all cores)")
    t.add_argument("--max-words", type=int, default=None,
                   help="cap on distinct words kept while counting (drops the rarest; for huge corpora)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = verbs.add_parser("encode", help='print the token ids of "text" ("-" reads stdin)')
    e.add_argument("dir", type=Path)
    e.add_argument("text")
    e.add_argument("--allow-special", action="store_true", help="turn <|...|> text into special ids")
    e.set_defaults(func=cmd_encode)

    s = verbs.add_parser("show", help='show "text" split into coloured tokens; --html writes a page')
    s.add_argument("dir", type=Path)
    s.add_argument("text")
    s.add_argument("--html", type=Path, help="write a self-contained HTML page here")
    s.add_argument("--ids", action="store_true", help="also print the ids")
    s.add_argument("--color", action="store_true", help="colours even when stdout is not a terminal")
    s.add_argument("--allow-special", action="store_true", help="turn <|...|> text into special ids")
    s.set_defaults(func=cmd_show)

    r = verbs.add_parser("report", help="compression, vocab usage, longest tokens; compare tokenizers")
    r.add_argument("dir", type=Path)
    r.add_argument("--text", type=Path, nargs="+", required=True, help="sample text file(s) or dirs")
    r.add_argument("--compare", type=Path, nargs="*", default=[], help="other tokenizer directories (ours, or any HF tokenizer.json)")
    r.add_argument("--text-field", default="text", help="jsonl field(s) holding text")
    r.add_argument("--max-chars", type=int, default=50_000_000, help="read at most this much text")
    r.set_defaults(func=cmd_report)
