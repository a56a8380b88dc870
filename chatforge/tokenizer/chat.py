"""Conversations -> token ids and a loss mask (the contract in docs/architecture.md).

    <|bos|> <|system_start|> … <|system_end|> <|user_start|> … <|user_end|>
    <|assistant_start|> text <|python_start|> code <|python_end|> <|output_start|> out <|output_end|>
    text … <|assistant_end|>

mask = 1 exactly on what the assistant writes (its text, its tool calls with their delimiters, and
<|assistant_end|>, so it learns to stop); 0 on the prompt, <|assistant_start|> and tool output
(the engine writes the output, the model must not be trained to invent it).
Message text is always encoded as plain text: a user typing "<|assistant_end|>" gets ordinary tokens.
"""

from __future__ import annotations

from chatforge.common import ChatforgeError

# assistant part type -> (start token, end token, written by the assistant?)
ASSISTANT_PARTS = {
    "text": (None, None, True),
    "python": ("<|python_start|>", "<|python_end|>", True),
    "python_output": ("<|output_start|>", "<|output_end|>", False),
    "search": ("<|search_start|>", "<|search_end|>", True),
    "search_output": ("<|output_start|>", "<|output_end|>", False),
}


def _plain_text(content, role: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # a list of {"type": "text", "text": ...} parts
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type", "text") == "text"
                    and isinstance(part.get("text"), str)):
                raise ChatforgeError(f"a {role} message may only hold text parts, got {part!r:.80}")
            texts.append(part["text"])
        return "".join(texts)
    raise ChatforgeError(f"{role} message content must be a string, got {type(content).__name__}")


def _assistant_parts(content):
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise ChatforgeError(f"assistant content must be a string or a list of parts, "
                         f"got {type(content).__name__}")


def render_conversation(tok, messages, max_tokens: int | None = None):
    ids: list[int] = [tok.bos_id]
    mask: list[int] = [0]

    def add(tokens, m):
        ids.extend(tokens)
        mask.extend([m] * len(tokens))

    sid = tok.special_id
    if not isinstance(messages, list) or not messages:
        raise ChatforgeError("a conversation must be a non-empty list of messages")
    for msg in messages:
        role = msg.get("role") if isinstance(msg, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if role in ("system", "user"):
            add([sid(f"{role}_start")], 0)
            add(tok.encode(_plain_text(content, role)), 0)
            add([sid(f"{role}_end")], 0)
        elif role == "assistant":
            add([sid("assistant_start")], 0)
            for part in _assistant_parts(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in ASSISTANT_PARTS or not isinstance(part.get("text"), str):
                    raise ChatforgeError(f"unknown assistant part {part!r:.80}; types are "
                                         + ", ".join(ASSISTANT_PARTS) + " each with a 'text' string")
                start, end, learned = ASSISTANT_PARTS[kind]
                m = 1 if learned else 0
                if start:
                    add([sid(start)], m)
                add(tok.encode(part["text"]), m)
                if end:
                    add([sid(end)], m)
            add([sid("assistant_end")], 1)
        else:
            raise ChatforgeError(f"unknown message role {role!r}; roles are system, user, assistant")
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_for_completion(tok, messages) -> list[int]:
    """Prompt for generation: the conversation without a final assistant message, then
    <|assistant_start|> so the model writes the assistant's reply next."""
    messages = list(messages)
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not messages:
        raise ChatforgeError("nothing to complete: the conversation has no user or system message")
    ids, _ = render_conversation(tok, messages)
    return ids + [tok.special_id("assistant_start")]
