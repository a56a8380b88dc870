"""`chatforge chat RUN`: a terminal chat with streaming output and visible tool calls.

Commands: /reset (forget the conversation), /system TEXT (set the system prompt; starts over),
/quit. Ctrl-C during a reply stops that reply; Ctrl-C or Ctrl-D at the prompt quits.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from chatforge.common import ChatforgeError
from chatforge.infer.cli import engine_from_args
from chatforge.infer.engine import Engine, Request, SamplingParams, merge_parts

HELP = "commands: /reset  /system TEXT  /quit   (Ctrl-C stops a reply)"
COLORS = {"python": "\033[36m", "python_output": "\033[33m", "search": "\033[36m", "search_output": "\033[33m",
          "dim": "\033[2m", "reset": "\033[0m", "user": "\033[1m"}
LABELS = {"python": "python", "python_output": "output", "search": "search", "search_output": "results"}


class PartPrinter:
    """Prints streamed (type, text) deltas; tool calls and outputs as labelled, coloured blocks."""

    def __init__(self, out: TextIO, color: bool):
        self.out, self.color, self.kind = out, color, "text"

    def _c(self, name: str) -> str:
        return COLORS[name] if self.color else ""

    def write(self, parts) -> None:
        for kind, text in parts:
            if kind != self.kind:
                if self.kind != "text":
                    self.out.write(self._c("reset") + ("" if self._ends_nl else "\n"))
                if kind != "text":
                    self.out.write(f"\n{self._c(kind)}┌─ {LABELS.get(kind, kind)} ─\n")
                self.kind = kind
            self.out.write(text)
            if text:
                self._ends_nl = text.endswith("\n")
            self.out.flush()

    _ends_nl = True

    def close(self) -> None:
        if self.kind != "text":
            self.out.write(self._c("reset"))
            self.kind = "text"
        self.out.write("\n")
        self.out.flush()


def chat_loop(engine: Engine, params: SamplingParams, system: str | None = None,
              read: Callable[[str], str] = input, out: TextIO = sys.stdout, color: bool | None = None) -> None:
    color = out.isatty() if color is None else color
    history: list[dict] = []
    out.write(f"chatforge chat · context {engine.max_context} tokens · {HELP}\n")
    while True:
        try:
            line = read("\n" + (COLORS["user"] if color else "") + "you> " + (COLORS["reset"] if color else ""))
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in ("/quit", "/exit"):
            return
        if cmd == "/reset":
            history = []
            out.write("(conversation cleared)\n")
            continue
        if cmd == "/system" or cmd.startswith("/system "):
            system = cmd[len("/system"):].strip() or None
            history = []
            out.write(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)\n")
            continue
        if cmd.startswith("/"):
            out.write(f"unknown command {cmd.split()[0]}; {HELP}\n")
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        try:
            prompt = engine.chat_prompt(messages)
        except ChatforgeError as e:
            history.pop()
            out.write(f"error: {e} (/reset starts over)\n")
            continue
        req = Request(prompt, params)
        parts: list[dict] = []
        printer = PartPrinter(out, color)
        out.write("assistant> ")
        gen = engine.generate([req])
        finish = None
        try:
            for events in gen:
                for ev in events:
                    printer.write(ev.parts)
                    merge_parts(parts, ev.parts)
                    finish = ev.finish_reason or finish
        except KeyboardInterrupt:
            req.cancel()
            finish = "interrupted"
        finally:
            gen.close()
        printer.close()
        if finish in ("length", "interrupted"):
            out.write(f"({'stopped' if finish == 'interrupted' else 'cut at --max-tokens'})\n")
        history.append({"role": "assistant", "content": parts or ""})


def run_chat(args) -> int:
    engine = engine_from_args(args)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed)
    params.validate()
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    system = args.system
    if system is None and getattr(args, "search_index", None) and not args.no_tools:
        from chatforge.posttrain.knowledge_probe import SEARCH_SYSTEM
        system = SEARCH_SYSTEM  # the prompt SFT taught the model to search under
    chat_loop(engine, params, system=system)
    return 0
