"""Tools the model can call by writing special tokens, and the registry the engine consults.

A tool is a pair of special tokens around the model's call text plus a function from that text
to output text. When the model emits `start`, the engine collects tokens up to `end`, calls
`run(text)`, and forces `<|output_start|>output<|output_end|>` into the context (nanochat's
scheme). Adding a tool (e.g. web search on <|search_start|>/<|search_end|>) is one `register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from chatforge.infer.sandbox import run_python

OUTPUT_START = "<|output_start|>"
OUTPUT_END = "<|output_end|>"


@dataclass(frozen=True)
class Tool:
    name: str                  # also the conversation part type: {"type": name, "text": call}
    start: str                 # special token that opens a call, e.g. "<|python_start|>"
    end: str                   # special token that closes it
    run: Callable[[str], str]  # call text -> output text; must not raise for bad input
    max_call_tokens: int = 2048  # a call longer than this is cut off and run as is


class ToolRegistry:
    def __init__(self, tools: list[Tool] = ()):
        self._by_name: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, tool: Tool) -> None:
        if tool.name in self._by_name:
            raise ValueError(f"tool {tool.name!r} registered twice")
        self._by_name[tool.name] = tool

    def __iter__(self):
        return iter(self._by_name.values())

    def __len__(self):
        return len(self._by_name)

    def get(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    def by_start_id(self, tokenizer) -> dict[int, Tool]:
        """start-token id -> tool, for the tokens this tokenizer actually has."""
        return {tokenizer.special_id(t.start): t for t in self}

    def call(self, tool: Tool, text: str) -> str:
        try:
            return tool.run(text)
        except Exception as e:  # a tool bug is reported to the model, never crashes generation
            return f"[tool {tool.name} failed: {type(e).__name__}: {e}]"


def python_tool(timeout: float = 5.0, memory_mb: int = 512, max_output: int = 4096) -> Tool:
    def run(code: str) -> str:
        return run_python(code, timeout=timeout, memory_mb=memory_mb,
                          max_output=max_output).as_tool_output()
    return Tool("python", "<|python_start|>", "<|python_end|>", run)


def default_tools(search_index=None, tokenizer=None) -> ToolRegistry:
    """python, plus search over `search_index` (chatforge index build) when given."""
    tools = [python_tool()]
    if search_index:
        from chatforge.infer.search import search_tool
        tools.append(search_tool(search_index, tokenizer=tokenizer))
    return ToolRegistry(tools)
