"""`chatforge <stage> <verb>`: one entry point, one sub-command group per pipeline stage.

Each stage module exposes `register(subparsers)` which adds its commands and sets
`func=handler` on them. Stage modules keep heavy imports (torch, ...) inside their
handlers so that `chatforge --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from chatforge.common import ChatforgeError

# Pipeline order: this is also the order `chatforge --help` lists them in.
STAGE_MODULES = [
    "chatforge.data.cli",        # data build / tokenize / inspect
    "chatforge.tokenizer.cli",   # tokenizer train / encode / show / report
    "chatforge.train.cli",       # train, sample
    "chatforge.posttrain.cli",   # sft
    "chatforge.posttrain.knowledge_probe",  # probe
    "chatforge.infer.cli",       # chat
    "chatforge.infer.search",    # index build / query
    "chatforge.serve.cli",       # serve
    "chatforge.eval.cli",        # eval
    "chatforge.export.cli",      # export (Hugging Face, GGUF)
    "chatforge.pipeline.cli",    # speedrun
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatforge",
        description="Raw web pages to a chat assistant: data -> tokenizer -> pretrain -> SFT -> chat.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in STAGE_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # a group without a verb (e.g. `chatforge tokenizer`): show its help
        (getattr(args, "_parser", None) or parser).print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except ChatforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
