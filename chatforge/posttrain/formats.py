"""Readers for the conversation formats users bring, converted to our `{"messages": [...]}`.

- alpaca: `[{"instruction", "input", "output"}]` as a JSON array or JSONL (optional "system").
- sharegpt: `{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}`, JSON or JSONL.
- openai: chat-completions messages JSONL, `{"messages": [...]}` with roles system/user/assistant
  and tool calling: an assistant message's `tool_calls` becomes a `python`/`search` part and the
  following `role: "tool"` message its `python_output`/`search_output` part; consecutive assistant
  pieces merge into one assistant turn (that is how our renderer lays tool use out). Content may
  be a string or a list of `{"type": "text", "text"}` parts. Our own format is a subset of this.

`load_conversations(path, format="auto")` picks the format from the first record. Bad records are
counted in `stats` and skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterator

from chatforge.common import ChatforgeError
from chatforge.posttrain.conversation import (
    PART_TYPES,
    InvalidConversation,
    merge_consecutive,
    open_text,
    validate_conversation,
)

FORMATS = ("alpaca", "sharegpt", "openai")

# Tool names other systems use for what our tokens call python / search.
PYTHON_TOOLS = {"python", "python_interpreter", "code_interpreter", "execute_python", "run_python", "ipython"}
SEARCH_TOOLS = {"search", "web_search", "browser", "browser.search", "google_search", "bing_search"}


def _records(path: Path) -> Iterator[dict]:
    """Records of a JSON array/object file or a JSONL file."""
    with open_text(path) as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ChatforgeError(f"{path}: not valid JSON ({e}); fix the file or give one record per line") from e
        yield from data
        return
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield {"__bad_json__": True}


def detect_format(record: dict) -> str:
    if isinstance(record, dict):
        if "conversations" in record:
            return "sharegpt"
        if "messages" in record:
            return "openai"
        if "instruction" in record and "output" in record:
            return "alpaca"
    raise ChatforgeError(
        "cannot tell the conversation format from the first record; expected alpaca "
        "(instruction/input/output), sharegpt (conversations) or openai (messages) - pass --format"
    )


def from_alpaca(rec: dict) -> dict:
    prompt = str(rec.get("instruction", "")).strip()
    if str(rec.get("input", "") or "").strip():
        prompt += "\n\n" + str(rec["input"]).strip()
    messages = []
    if str(rec.get("system", "") or "").strip():
        messages.append({"role": "system", "content": rec["system"].strip()})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(rec.get("output", "")).strip()}]
    return {"messages": messages}


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}


def from_sharegpt(rec: dict) -> dict:
    messages = []
    for turn in rec.get("conversations") or []:
        who = str(turn.get("from", "")).lower()
        if who not in _SHAREGPT_ROLES:
            raise InvalidConversation(f"unknown sharegpt speaker {turn.get('from')!r}")
        messages.append({"role": _SHAREGPT_ROLES[who], "content": str(turn.get("value", "")).strip()})
    if rec.get("system") and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": str(rec["system"]).strip()})
    return {"messages": merge_consecutive(messages)}


def _text_of(content) -> str:
    """OpenAI content: a string, None, or a list of {"type": "text", "text"} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text"):
                out.append(str(p.get("text", "")))
            else:
                raise InvalidConversation(f"unsupported content part {p.get('type') if isinstance(p, dict) else p!r}")
        return "".join(out)
    raise InvalidConversation("content must be a string or a list of parts")


def _tool_call_part(call: dict) -> dict:
    fn = call.get("function") or {}
    name = str(fn.get("name", "")).lower()
    args = fn.get("arguments", "")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip().startswith("{") else args
        except json.JSONDecodeError:
            pass
    if name in PYTHON_TOOLS:
        kind, keys = "python", ("code", "source", "input", "script")
    elif name in SEARCH_TOOLS:
        kind, keys = "search", ("query", "q", "input", "search")
    else:
        raise InvalidConversation(f"unsupported tool {name!r} (only python and search tools map to our tokens)")
    if isinstance(args, dict):
        text = next((args[k] for k in keys if isinstance(args.get(k), str)), None)
        if text is None and len(args) == 1 and isinstance(next(iter(args.values())), str):
            text = next(iter(args.values()))
        if text is None:
            raise InvalidConversation(f"{name} tool call without a {keys[0]!r} argument")
    else:
        text = str(args)
    return {"type": kind, "text": text}


def from_openai(rec: dict) -> dict:
    messages: list[dict] = []
    pending: list[str] = []  # kinds of tool calls waiting for their tool message
    for m in rec.get("messages") or []:
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role in ("system", "user"):
            messages.append({"role": role, "content": _text_of(m.get("content")).strip()})
        elif role == "assistant":
            content = m.get("content")
            if isinstance(content, list) and content and all(isinstance(p, dict) and p.get("type") in PART_TYPES for p in content):
                parts = [dict(p) for p in content]  # already our parts
            else:
                text = _text_of(content)
                parts = [{"type": "text", "text": text}] if text.strip() else []
            for call in m.get("tool_calls") or []:
                part = _tool_call_part(call)
                parts.append(part)
                pending.append(part["type"])
            if parts:
                messages.append({"role": "assistant", "content": parts})
        elif role in ("tool", "function", "ipython"):
            if not pending:
                raise InvalidConversation("tool message without a preceding tool call")
            kind = pending.pop(0)
            out = {"type": kind + "_output", "text": _text_of(m.get("content"))}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1]["content"].append(out)
            else:
                raise InvalidConversation("tool message not after an assistant tool call")
        else:
            raise InvalidConversation(f"unknown role {role!r}")
    messages = merge_consecutive(messages)
    for m in messages:  # plain text answers stay plain strings
        c = m["content"]
        if isinstance(c, list) and all(p["type"] == "text" for p in c):
            m["content"] = "".join(p["text"] for p in c).strip()
    return {"messages": messages}


CONVERTERS = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai}


def load_conversations(path: str | Path, format: str = "auto", stats: Counter | None = None) -> Iterator[dict]:
    """Yield our conversations from a user file in alpaca / sharegpt / openai format."""
    stats = stats if stats is not None else Counter()
    path = Path(path)
    if not path.exists():
        raise ChatforgeError(f"{path} does not exist; pass the path of a conversation file")
    if format != "auto" and format not in CONVERTERS:
        raise ChatforgeError(f"unknown conversation format {format!r}; use one of auto, {', '.join(FORMATS)}")
    convert = None if format == "auto" else CONVERTERS[format]
    for rec in _records(path):
        if isinstance(rec, dict) and rec.get("__bad_json__"):
            stats["skipped: not JSON"] += 1
            continue
        if convert is None:
            convert = CONVERTERS[detect_format(rec)]
        try:
            if not isinstance(rec, dict):
                raise InvalidConversation("record is not a JSON object")
            conv = validate_conversation(convert(rec))
        except InvalidConversation as e:
            stats[f"skipped: {e}"] += 1
            continue
        stats["read"] += 1
        yield conv
