"""CLI for this stage. Placeholder until the stage lands; see docs/architecture.md."""

from chatforge.common import ChatforgeError


def _todo(args):
    raise ChatforgeError(f"'{args.command}' is not built yet in this checkout")


def register(sub):
    p = sub.add_parser("chat", help="terminal chat with a model")
    p.set_defaults(func=_todo)
