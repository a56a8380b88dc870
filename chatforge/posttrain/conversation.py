"""The one conversation format SFT trains on, its validation, and JSONL reading/writing.

A conversation is `{"messages": [...]}` (docs/architecture.md): an optional system message, then
user and assistant turns alternating, starting with the user. Assistant `content` is a string or a
list of parts (`text`, `python`, `python_output`, `search`, `search_output`). For training, the
last message must be the assistant's: that is what the model learns to write.

Readers never stop on a bad record: they count it in a `Counter` (reason -> count) and skip it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from chatforge.common import ChatforgeError, atomic_path

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output", "search", "search_output")


class InvalidConversation(ValueError):
    """A conversation that breaks the format; the message says how (used as a skip reason)."""


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file, decompressing .gz/.xz/.bz2/.zst by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    if suffix == ".zst":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return io.TextIOWrapper(raw, encoding="utf-8")
    return open(path, encoding="utf-8")


def _check_content(role: str, content, where: str) -> None:
    if isinstance(content, str):
        if not content.strip():
            raise InvalidConversation(f"empty {role} message")
        return
    if role != "assistant":
        raise InvalidConversation(f"{role} content must be a string{where}")
    if not isinstance(content, list) or not content:
        raise InvalidConversation(f"assistant content must be a string or a non-empty list of parts{where}")
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            raise InvalidConversation(f"assistant part must be a dict with type in {PART_TYPES}{where}")
        if not isinstance(part.get("text"), str):
            raise InvalidConversation(f"assistant {part['type']} part needs a string 'text'{where}")
    if not any(p["text"].strip() for p in content if p["type"] in ("text", "python", "search")):
        raise InvalidConversation("assistant message has nothing the assistant writes")


def validate_conversation(conv, *, for_training: bool = True) -> dict:
    """Return `conv` if it follows the format, else raise InvalidConversation saying why."""
    if not isinstance(conv, dict) or not isinstance(conv.get("messages"), list):
        raise InvalidConversation("not an object with a 'messages' list")
    messages = conv["messages"]
    if not messages:
        raise InvalidConversation("no messages")
    expect = "user"
    for i, m in enumerate(messages):
        where = f" (message {i})"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidConversation(f"role must be one of {ROLES}{where}")
        role = m["role"]
        if role == "system":
            if i != 0:
                raise InvalidConversation(f"system message only allowed first{where}")
        elif role != expect:
            raise InvalidConversation(f"expected a {expect} message{where}: turns must alternate, user first")
        else:
            expect = "assistant" if role == "user" else "user"
        _check_content(role, m.get("content"), where)
    if for_training and messages[-1]["role"] != "assistant":
        raise InvalidConversation("last message must be the assistant's (nothing to learn otherwise)")
    return conv


def merge_consecutive(messages: list[dict]) -> list[dict]:
    """Join consecutive messages of the same role (real dialogue data has double user turns)."""
    out: list[dict] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] and m["role"] != "system":
            prev = out[-1]
            a, b = prev["content"], m["content"]
            if isinstance(a, str) and isinstance(b, str):
                prev["content"] = a + "\n\n" + b
            else:
                as_parts = lambda c: [{"type": "text", "text": c}] if isinstance(c, str) else list(c)  # noqa: E731
                prev["content"] = as_parts(a) + as_parts(b)
        else:
            out.append(dict(m))
    return out


def assistant_text(message: dict) -> str:
    """All text of a message, parts joined (for display and simple checks)."""
    c = message["content"]
    return c if isinstance(c, str) else "".join(p["text"] for p in c)


def read_conversations_jsonl(path: str | Path, stats: Counter | None = None) -> Iterator[dict]:
    """Yield valid conversations from a `{"messages": [...]}` JSONL file; count and skip bad lines."""
    stats = stats if stats is not None else Counter()
    path = Path(path)
    if not path.exists():
        raise ChatforgeError(f"{path} does not exist; pass a JSONL file of {{\"messages\": [...]}} lines")
    with open_text(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                conv = validate_conversation(json.loads(line))
            except json.JSONDecodeError:
                stats["skipped: not JSON"] += 1
                continue
            except InvalidConversation as e:
                stats[f"skipped: {e}"] += 1
                continue
            stats["read"] += 1
            yield {"messages": conv["messages"]}


def write_conversations_jsonl(path: str | Path, conversations: Iterable[dict]) -> int:
    """Write conversations as JSONL atomically; returns how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(json.dumps({"messages": conv["messages"]}, ensure_ascii=False) + "\n")
            n += 1
    return n
