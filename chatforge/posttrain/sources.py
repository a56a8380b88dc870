"""Readers that turn the public sets in ../shared/data into conversations.

- T0 prompted tasks (instructions/t0-train-50k.jsonl.xz): prompt -> completion, one turn. Whole
  task *families* (all templates of one underlying dataset) are held out for evaluation by
  `t0_split`, because the templates of one family share their examples: holding out only some
  templates would leak the answers through the others.
- alpaca seed tasks (instructions/alpaca_seed_tasks.jsonl): instruction (+ input) -> output.
- hh-rlhf (hh-rlhf/*.jsonl.gz): the chosen side, real multi-turn dialogues.
- GSM8K (gsm8k/*.jsonl): the `<<a*b=c>>` calculator annotations become python tool calls, so
  the model learns to call the tool instead of guessing arithmetic.

Every reader yields `{"messages": [...]}` conversations, validated, and counts what it skips in
an optional `stats` Counter.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from chatforge.common import ChatforgeError, shared_data_dir
from chatforge.posttrain.conversation import (
    InvalidConversation,
    merge_consecutive,
    open_text,
    validate_conversation,
)

T0_PATH = "instructions/t0-train-50k.jsonl.xz"
ALPACA_SEED_PATH = "instructions/alpaca_seed_tasks.jsonl"
HH_RLHF_PATH = "hh-rlhf/harmless-base-test.jsonl.gz"
GSM8K_PATHS = {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}

# T0 families held out of SFT; the eval stage turns their templates into a multiple-choice set.
# All four are classification with a small fixed label set per template (topic, sentiment,
# paraphrase), so log-likelihood scoring of each label is well defined.
T0_EVAL_FAMILIES = ("ag_news", "dbpedia_14", "rotten_tomatoes", "glue_qqp")


def shared_path(relative: str, path: str | Path | None = None) -> Path:
    """`path` if given, else ../shared/data/<relative>; a clear error when neither exists."""
    if path is not None:
        p = Path(path)
    else:
        root = shared_data_dir()
        if root is None:
            raise ChatforgeError(
                f"../shared/data is absent, so {relative} cannot be read; set CHATFORGE_SHARED_DATA "
                "or pass the file's path"
            )
        p = root / relative
    if not p.exists():
        raise ChatforgeError(f"{p} does not exist; pass the path of the file")
    return p


def t0_family(template: str) -> str:
    """The underlying dataset of a T0 template name, e.g. 'ag_news_classify' -> 'ag_news'."""
    for fam in T0_EVAL_FAMILIES:
        if template == fam or template.startswith(fam + "_"):
            return fam
    return template.split("_")[0]


def t0_split(template: str) -> str:
    """'eval' for templates of the held-out families (multiple-choice eval set), else 'train'.

    Deterministic and by family, so no example of an eval template is seen in training.
    """
    return "eval" if t0_family(template) in T0_EVAL_FAMILIES else "train"


def _valid(conv: dict, stats: Counter) -> dict | None:
    try:
        validate_conversation(conv)
    except InvalidConversation as e:
        stats[f"skipped: {e}"] += 1
        return None
    stats["read"] += 1
    return conv


def read_t0_records(path: str | Path | None = None) -> Iterator[dict]:
    """Raw T0 records `{prompt, completion, template}` with the `<|endoftext|>` marker removed."""
    with open_text(shared_path(T0_PATH, path)) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                rec["completion"] = rec["completion"].replace("<|endoftext|>", "").strip()
                rec["prompt"] = rec["prompt"].strip()
                yield rec


def read_t0(path: str | Path | None = None, split: str = "train", stats: Counter | None = None) -> Iterator[dict]:
    """T0 prompted tasks of one split ('train' or 'eval', see `t0_split`) as one-turn conversations."""
    if split not in ("train", "eval"):
        raise ChatforgeError(f"T0 split must be 'train' or 'eval', not {split!r}")
    stats = stats if stats is not None else Counter()
    for rec in read_t0_records(path):
        if t0_split(rec["template"]) != split:
            continue
        conv = {"messages": [{"role": "user", "content": rec["prompt"]},
                             {"role": "assistant", "content": rec["completion"]}]}
        if (conv := _valid(conv, stats)) is not None:
            yield conv


def read_alpaca_seed(path: str | Path | None = None, stats: Counter | None = None) -> Iterator[dict]:
    """alpaca seed tasks: one conversation per instance (instruction, then the input if any)."""
    stats = stats if stats is not None else Counter()
    with open_text(shared_path(ALPACA_SEED_PATH, path)) as f:
        for line in f:
            if not line.strip():
                continue
            task = json.loads(line)
            for inst in task.get("instances", []):
                prompt = task["instruction"].strip()
                if inst.get("input", "").strip():
                    prompt += "\n\n" + inst["input"].strip()
                conv = {"messages": [{"role": "user", "content": prompt},
                                     {"role": "assistant", "content": inst.get("output", "").strip()}]}
                if (conv := _valid(conv, stats)) is not None:
                    yield conv


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh_dialogue(text: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages (consecutive same-role turns merged)."""
    pieces = _HH_TURN.split("\n\n" + text.lstrip("\n"))
    if pieces[0].strip():
        raise InvalidConversation("text before the first Human:/Assistant: turn")
    messages = []
    for speaker, body in zip(pieces[1::2], pieces[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": body.strip()})
    messages = [m for m in messages if m["content"]]  # an empty turn carries nothing
    return merge_consecutive(messages)


def read_hh_rlhf(path: str | Path | None = None, side: str = "chosen", stats: Counter | None = None) -> Iterator[dict]:
    """The `chosen` (or `rejected`) dialogues of an hh-rlhf file as multi-turn conversations."""
    stats = stats if stats is not None else Counter()
    with open_text(shared_path(HH_RLHF_PATH, path)) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                messages = parse_hh_dialogue(json.loads(line)[side])
            except InvalidConversation as e:
                stats[f"skipped: {e}"] += 1
                continue
            while messages and messages[-1]["role"] != "assistant":
                messages.pop()  # a trailing human turn has no reply to learn
            if (conv := _valid({"messages": messages}, stats)) is not None:
                yield conv


_CALC = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def arithmetic_value(expr: str):
    """Value of a plain arithmetic expression (numbers, + - * / // % **, parentheses), else None.

    Evaluated on the AST, never with eval: the data is not trusted code.
    """
    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(b) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError("not arithmetic")

    try:
        return ev(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


def gsm8k_answer_parts(answer: str, tools: bool = True) -> list[dict] | str:
    """A GSM8K worked solution as assistant parts: `<<48/2=24>>` -> python '48/2', output '24.0'.

    The output part is what our python tool prints for the expression (the repr of its value, as
    in a REPL), so training shows the model the same outputs the engine will force at chat time;
    an annotation that is not plain arithmetic keeps the annotated result. The text around each
    annotation stays as it is (it already repeats the result, e.g. '48/2 = <<48/2=24>>24 clips'),
    and the final '#### N' line is kept so answers can be extracted. With tools=False the
    annotations are just removed.
    """
    if not tools:
        return _CALC.sub("", answer).strip()
    parts: list[dict] = []
    pos = 0
    for m in _CALC.finditer(answer):
        if m.start() > pos:
            parts.append({"type": "text", "text": answer[pos:m.start()]})
        value = arithmetic_value(m.group(1))
        parts.append({"type": "python", "text": m.group(1).strip()})
        parts.append({"type": "python_output", "text": repr(value) if value is not None else m.group(2).strip()})
        pos = m.end()
    if pos < len(answer):
        parts.append({"type": "text", "text": answer[pos:]})
    return parts


def read_gsm8k(path: str | Path | None = None, split: str = "train", tools: bool = True,
               stats: Counter | None = None) -> Iterator[dict]:
    """GSM8K problems as conversations whose answers call the python tool for arithmetic."""
    if split not in GSM8K_PATHS:
        raise ChatforgeError(f"GSM8K split must be one of {sorted(GSM8K_PATHS)}, not {split!r}")
    stats = stats if stats is not None else Counter()
    with open_text(shared_path(GSM8K_PATHS[split], path)) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            conv = {"messages": [{"role": "user", "content": rec["question"].strip()},
                                 {"role": "assistant", "content": gsm8k_answer_parts(rec["answer"], tools)}]}
            if (conv := _valid(conv, stats)) is not None:
                yield conv
