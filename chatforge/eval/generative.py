"""Evaluations where the chat model writes an answer: GSM8K, HumanEval, chat probes.

All of them talk to the model through one callable, `chat(conversations, max_new_tokens=..., tools=...)`:
a batch of message lists in, one reply per conversation out, each as conversation content (a string,
or a list of parts as in docs/architecture.md: text / python / python_output). `chatforge.eval.run`
builds it on the inference engine (one batched generation per chunk); tests pass a fake. This keeps
the scoring logic free of generation details.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from chatforge.common import ChatforgeError, shared_data_dir
from chatforge.eval.answers import answers_match, extract_answer, gsm8k_reference


def _shared(relative: str, path=None) -> Path:
    if path is not None:
        p = Path(path)
    else:
        root = shared_data_dir()
        if root is None:
            raise ChatforgeError(f"../shared/data is absent, so {relative} cannot be read; set CHATFORGE_SHARED_DATA")
        p = root / relative
    if not p.exists():
        raise ChatforgeError(f"{p} does not exist")
    return p


def _jsonl(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


CHUNK = 16  # conversations per batched generation call (callers pass more on a GPU)


def _chunks(items, size=CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


TOO_LONG = "(not run: the prompt is longer than the model's context)"


def reply_text(content) -> str:
    """The text the user reads: text parts joined (tool calls and outputs left out).

    `None` is the reply to a prompt that did not fit the context: no text, scored as wrong."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def tool_calls(content) -> int:
    return 0 if content is None or isinstance(content, str) else sum(1 for p in content if p.get("type") == "python")


def reply_for_display(content, limit: int = 600) -> str:
    """One string with tool calls marked, for tables and sample conversations."""
    if content is None:
        return TOO_LONG
    if isinstance(content, str):
        text = content
    else:
        marks = {"python": "[python] {}", "python_output": "[output] {}", "text": "{}"}
        text = " ".join(marks.get(p.get("type"), "{}").format(p.get("text", "").strip()) for p in content)
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " …"


# ---------------------------------------------------------------- GSM8K


def load_gsm8k(path=None, limit=None) -> list[dict]:
    recs = _jsonl(_shared("gsm8k/test.jsonl", path))[:limit or None]
    return [{"question": r["question"], "gold": gsm8k_reference(r["answer"])} for r in recs]


def eval_gsm8k(chat, problems, tools: bool, max_new_tokens: int = 256, progress=None, batch_size: int = CHUNK) -> dict:
    correct = calls = too_long = 0
    samples = []
    for chunk in _chunks(problems, batch_size):
        replies = chat([[{"role": "user", "content": p["question"]}] for p in chunk],
                       max_new_tokens=max_new_tokens, tools=tools)
        for prob, reply in zip(chunk, replies):
            pred = extract_answer(reply_text(reply))
            ok = answers_match(pred, prob["gold"])
            correct += ok
            calls += tool_calls(reply)
            too_long += reply is None
            if len(samples) < 3:
                samples.append({"question": prob["question"], "reply": reply_for_display(reply), "pred": pred,
                                "gold": prob["gold"], "correct": ok})
        if progress is not None:
            progress(len(chunk))
    n = len(problems)
    return {"n": n, "acc": correct / n if n else None, "tool_calls_per_problem": calls / n if n else None,
            "prompt_too_long": too_long, "samples": samples}


# ---------------------------------------------------------------- HumanEval


def load_humaneval(path=None, limit=None) -> list[dict]:
    return _jsonl(_shared("humaneval/HumanEval.jsonl.gz", path))[:limit or None]


HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Reply with the whole function in one "
                         "```python code block.\n\n```python\n{prompt}```")

_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def extract_code(reply: str) -> str:
    """The first fenced code block of a reply (an unclosed one runs to the end), else the reply."""
    m = _CODE_BLOCK.search(reply)
    return (m.group(1) if m else reply).rstrip() + "\n"


def humaneval_program(problem: dict, code: str) -> str:
    """prompt (its imports, helpers and a docstring-only function: valid Python on its own) + the
    model's code + the tests. A completion that redefines the function replaces the stub; one that
    is only a body continues the prompt."""
    if re.search(rf"^\s*def {re.escape(problem['entry_point'])}\s*\(", code, flags=re.M):
        body = problem["prompt"] + "\n    pass\n\n" + code
    else:
        body = problem["prompt"] + code
    return f"{body}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def eval_humaneval(chat, problems, max_new_tokens: int = 384, timeout: float = 10.0, progress=None,
                   batch_size: int = CHUNK) -> dict:
    from chatforge.infer.sandbox import run_python

    passed = 0
    samples = []
    for chunk in _chunks(problems, batch_size):
        replies = chat([[{"role": "user", "content": HUMANEVAL_INSTRUCTION.format(prompt=p["prompt"])}] for p in chunk],
                       max_new_tokens=max_new_tokens, tools=False)
        for prob, reply in zip(chunk, replies):
            program = humaneval_program(prob, extract_code(reply_text(reply)))
            result = run_python(program, timeout=timeout)
            ok = result.exit_code == 0 and not result.timed_out
            passed += ok
            if len(samples) < 2:
                samples.append({"task_id": prob["task_id"], "reply": reply_for_display(reply), "passed": ok})
        if progress is not None:
            progress(len(chunk))
    n = len(problems)
    return {"n": n, "pass@1": passed / n if n else None, "samples": samples}


# ---------------------------------------------------------------- chat probes


def load_chat_probes(root=None, limit=None) -> list[dict]:
    """Prompts from ../shared/data/chat-eval, alternating self-instruct user-oriented tasks and the
    first turn of MT-bench questions (deterministic order)."""
    root = Path(root) if root else _shared("chat-eval")
    si = []
    for r in _jsonl(root / "self-instruct-user-oriented.jsonl"):
        inst = r["instances"][0] if r.get("instances") else {}
        prompt = r["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
        si.append({"source": "self-instruct", "prompt": prompt, "reference": inst.get("output", "")})
    mt = [{"source": f"mt-bench/{r['category']}", "prompt": r["turns"][0], "reference": ""}
          for r in _jsonl(root / "mt-bench-questions.jsonl")]
    probes = []
    for a, b in zip(si, mt):
        probes += [a, b]
    probes += si[len(mt):] + mt[len(si):]
    return probes[:limit or None]


def run_chat_probes(chat, probes, max_new_tokens: int = 128, progress=None, batch_size: int = CHUNK) -> list[dict]:
    out = []
    for chunk in _chunks(probes, batch_size):
        replies = chat([[{"role": "user", "content": p["prompt"]}] for p in chunk],
                       max_new_tokens=max_new_tokens, tools=True)
        out += [{**p, "answer": reply_for_display(r, limit=2000)} for p, r in zip(chunk, replies)]
        if progress is not None:
            progress(len(chunk))
    return out
