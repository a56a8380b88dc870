"""RL tasks: problems whose answers a program can check, and the verifiers that check them.

A task spec names where problems come from (`chatforge rl --task SPEC`):
  gsm8k               GSM8K: train split to practise on, test split held out (final `#### N`)
  arithmetic[:LEVEL]  generated arithmetic (word) problems, LEVEL 0-4 (default 2), endless and
                      deterministic: problem i of a seed is always the same one
  jsonl:PATH          your own: one JSON object a line, {"prompt": str, "answer": str,
                      "verifier": name (default "number"), "split": "train"|"test" (optional)};
                      without any "split", every 10th line is held out
  pairs[:PATH]        prompts of preference pairs (default hh-rlhf) for RLHF with --reward rm:RUN;
                      no answer to check (chatforge.posttrain.pairs.prompt_task)
A `Problem` is a user prompt, a reference answer and a verifier name. Verifiers map (the reply's
text, the reference) to True/False; `VERIFIERS` lists them. A bad file or verifier name is a
one-line ChatforgeError raised when the task is built, before any model is loaded.

The arithmetic task is also an SFT set (`arithmetic_conversations`, source "arithmetic" in the
mixtures): the reply calls the python tool with the expression and copies its output into the
answer, the same shape the RL run then reinforces. Levels:
  0  "What is 7 + 5?", "Compute 7 minus 5."  two digits 1-9, + or -, six phrasings
  1  "What is 47 - 25?"                    two numbers 2-99, + or -
  2  a one-step word problem               two numbers 2-20, + or -
  3  a one-step word problem               numbers 2-99, + - or x
  4  a two-step word problem               three numbers 2-50, + then -
The cpu-tiny speedrun's d3 model practises level 0 (after a cold start on level-0 conversations);
GSM8K-sized models can start at 3 or 4.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from chatforge.common import ChatforgeError
from chatforge.eval.answers import answers_match, extract_answer, gsm8k_reference, normalize_number

# ---------------------------------------------------------------------------------------------
# verifiers: (reply text, reference answer) -> correct?


def verify_number(text: str, answer: str) -> bool:
    """GSM8K's rule: the `#### N` answer if the reply has one, else its last number, compared as
    numbers ("1,000", "$1000.00" and "1000 dollars" all equal 1000). A unicode minus counts."""
    gold = normalize_number(answer)
    if gold is None:
        return False
    return answers_match(extract_answer(text.replace("\u2212", "-")), gold)


def verify_exact(text: str, answer: str) -> bool:
    return text.strip().casefold() == answer.strip().casefold()


def verify_contains(text: str, answer: str) -> bool:
    return answer.strip().casefold() in text.casefold()


VERIFIERS: dict[str, Callable[[str, str], bool]] = {
    "number": verify_number,
    "gsm8k": verify_number,
    "exact": verify_exact,
    "contains": verify_contains,
}


def get_verifier(name: str) -> Callable[[str, str], bool]:
    if name not in VERIFIERS:
        raise ChatforgeError(f"unknown verifier {name!r}; choose one of {', '.join(VERIFIERS)}")
    return VERIFIERS[name]


@dataclass(frozen=True)
class Problem:
    prompt: str              # the user's message
    answer: str              # the reference answer
    verifier: str = "number"

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]

    def check(self, text: str) -> bool:
        return VERIFIERS[self.verifier](text, self.answer)


# ---------------------------------------------------------------------------------------------
# tasks


class Task:
    """Training problems by index (`problem(i)`, `n_train` of them or endless) and a fixed held-out
    list (`heldout(n)`: the first n, the same every call)."""

    name: str = ""
    n_train: int | None = None
    checkable: bool = True  # False: no answers (RLHF's prompts), so no held-out accuracy to measure

    def problem(self, i: int) -> Problem:
        raise NotImplementedError

    def heldout(self, n: int) -> list[Problem]:
        raise NotImplementedError


class ListTask(Task):
    def __init__(self, name: str, train: list[Problem], test: list[Problem], checkable: bool = True):
        if not train:
            raise ChatforgeError(f"task {name}: no training problems")
        if not test:
            raise ChatforgeError(f"task {name}: no held-out problems")
        self.name, self.train, self.test, self.n_train = name, train, test, len(train)
        self.checkable = checkable

    def problem(self, i: int) -> Problem:
        return self.train[i % len(self.train)]

    def heldout(self, n: int) -> list[Problem]:
        return self.test[:n] if n else list(self.test)


# --- generated arithmetic --------------------------------------------------------------------

_NAMES = ["Sam", "Mia", "Leo", "Ana", "Tom", "Zoe", "Raj", "Eva", "Ben", "Kim", "Max", "Ivy"]
_ITEMS = ["apples", "books", "coins", "marbles", "stickers", "pencils", "cards", "shells", "cookies", "stamps"]
_ADD = ["{n} has {a} {x}. {p} gets {b} more. How many {x} does {n} have now?",
        "{n} had {a} {x} and found {b} more. How many {x} does {n} have?",
        "There are {a} {x} in a box and {b} {x} on the table. How many {x} are there in all?",
        "{n} bought {a} {x} on Monday and {b} {x} on Tuesday. How many {x} did {n} buy?"]
_SUB = ["{n} has {a} {x}. {p} gives away {b}. How many {x} does {n} have left?",
        "{n} had {a} {x} and lost {b} of them. How many {x} are left?",
        "There were {a} {x} in a jar. {n} took {b}. How many {x} are in the jar now?",
        "{n} had {a} {x} and sold {b}. How many {x} does {n} have now?"]
_MUL = ["{n} has {a} bags with {b} {x} in each bag. How many {x} does {n} have?",
        "Each box holds {b} {x}. How many {x} are in {a} boxes?",
        "{n} buys {a} packs of {x}. Each pack has {b} {x}. How many {x} does {n} buy?"]
_TWO = ["{n} has {a} {x}. {p} gets {b} more and then gives away {c}. How many {x} does {n} have now?",
        "{n} had {a} {x}, found {b} more and lost {c}. How many {x} are left?"]
# level 0's phrasings: 126 sums and differences alone would hold out only ~25 prompts, too few to
# measure a rise on; six phrasings hold out ~150 (the operands' order is always the expression's)
_BARE = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?", "What is {a} {word} {b}?",
         "Calculate {a} {word} {b}.", "How much is {a} {word} {b}?"]
ARITHMETIC_LEVELS = (0, 1, 2, 3, 4)


def arithmetic_problem(rng: random.Random, level: int = 2) -> tuple[Problem, str]:
    """One generated problem and the python expression that solves it."""
    n, x = rng.choice(_NAMES), rng.choice(_ITEMS)
    fill = dict(n=n, p="She" if n in ("Mia", "Ana", "Zoe", "Eva", "Kim", "Ivy") else "He", x=x)
    if level == 4:
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        c = rng.randint(2, a + b - 1)
        expr, value = f"{a} + {b} - {c}", a + b - c
        prompt = rng.choice(_TWO).format(a=a, b=b, c=c, **fill)
    else:
        lo, hi = {0: (1, 9), 1: (2, 99), 2: (2, 20), 3: (2, 99)}[level]
        op = rng.choice("+-*" if level == 3 else "+-")
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if op == "-":
            a, b = max(a, b) + (level >= 2), min(a, b)  # word problems never reach zero
        if op == "*":
            b = rng.randint(2, 12)
        expr = f"{a} {op} {b}"
        value = a + b if op == "+" else a - b if op == "-" else a * b
        if level == 0:
            prompt = rng.choice(_BARE).format(a=a, b=b, op=op, word="plus" if op == "+" else "minus")
        elif level == 1:
            prompt = f"What is {a} {op} {b}?"
        else:
            prompt = rng.choice(_ADD if op == "+" else _SUB if op == "-" else _MUL).format(a=a, b=b, **fill)
    return Problem(prompt, str(value), "number"), expr


def is_heldout(prompt: str) -> bool:
    """A fixed fifth of all possible prompts is held out of training (SFT and RL) by a hash of the
    text, so the split holds for every level, even level 0's few hundred problems."""
    return zlib.crc32(prompt.encode()) % 5 == 0


class ArithmeticTask(Task):
    """Endless generated problems, none of them held out; `heldout(n)`: up to n distinct held-out ones."""

    HELDOUT = 1000

    def __init__(self, level: int = 2, seed: int = 0):
        if level not in ARITHMETIC_LEVELS:
            raise ChatforgeError(f"arithmetic level must be one of {ARITHMETIC_LEVELS}, not {level!r}")
        self.name, self.level, self.seed = f"arithmetic:{level}", level, seed
        rng, seen, self.test = random.Random(f"arithmetic-heldout:{level}"), set(), []
        for _ in range(50 * self.HELDOUT):
            p, _ = arithmetic_problem(rng, level)
            if is_heldout(p.prompt) and p.prompt not in seen:
                seen.add(p.prompt)
                self.test.append(p)
                if len(self.test) == self.HELDOUT:
                    break

    def problem(self, i: int) -> Problem:
        rng = random.Random(f"arithmetic:{self.level}:{self.seed}:{i}")
        while True:
            p, _ = arithmetic_problem(rng, self.level)
            if not is_heldout(p.prompt):
                return p

    def heldout(self, n: int) -> list[Problem]:
        return self.test[:n] if n else list(self.test)


def arithmetic_conversations(n: int, seed: int = 0, level: int = 1, tools: bool = True) -> list[dict]:
    """SFT conversations for the arithmetic task: python call with the expression, its output
    (exactly what the tool prints), then the answer sentence. Prompts held out of RL are skipped."""
    if level not in ARITHMETIC_LEVELS:
        raise ChatforgeError(f"arithmetic level must be one of {ARITHMETIC_LEVELS}, not {level!r}")
    convs = []
    for i in range(n):
        rng = random.Random(f"arithmetic-sft:{level}:{seed}:{i}")
        p, expr = arithmetic_problem(rng, level)
        while is_heldout(p.prompt):
            p, expr = arithmetic_problem(rng, level)
        if tools:
            reply = [{"type": "python", "text": expr}, {"type": "python_output", "text": p.answer + "\n"},
                     {"type": "text", "text": f"The answer is {p.answer}."}]
        else:
            reply = f"{expr} = {p.answer}. The answer is {p.answer}."
        convs.append({"messages": [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": reply}]})
    return convs


# --- GSM8K and user files --------------------------------------------------------------------


def gsm8k_task(path: str | None = None) -> ListTask:
    from chatforge.posttrain.sources import GSM8K_PATHS, shared_path

    def read(split):
        out = []
        with open(shared_path(GSM8K_PATHS[split], Path(path) / Path(GSM8K_PATHS[split]).name if path else None)) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    out.append(Problem(rec["question"].strip(), gsm8k_reference(rec["answer"]), "number"))
        return out

    return ListTask("gsm8k", read("train"), read("test"))


def jsonl_task(path: str) -> ListTask:
    p = Path(path)
    if not p.is_file():
        raise ChatforgeError(f"task file {p} does not exist; give jsonl:PATH to a file of "
                             '{"prompt": ..., "answer": ..., "verifier": ...} lines')
    rows = []
    for k, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ChatforgeError(f"{p}:{k}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise ChatforgeError(f'{p}:{k}: each line needs a non-empty "prompt" string')
        if not isinstance(rec.get("answer"), (str, int, float)) or isinstance(rec.get("answer"), bool):
            raise ChatforgeError(f'{p}:{k}: each line needs an "answer" (a string or number)')
        verifier = rec.get("verifier", "number")
        if verifier not in VERIFIERS:
            raise ChatforgeError(f"{p}:{k}: unknown verifier {verifier!r}; choose one of {', '.join(VERIFIERS)}")
        split = rec.get("split")
        if split not in (None, "train", "test"):
            raise ChatforgeError(f'{p}:{k}: "split" must be "train" or "test", not {split!r}')
        rows.append((Problem(rec["prompt"], str(rec["answer"]), verifier), split))
    if not rows:
        raise ChatforgeError(f"{p} holds no problems")
    if any(s is not None for _, s in rows):
        train = [q for q, s in rows if s != "test"]
        test = [q for q, s in rows if s == "test"]
    else:  # every 10th line held out
        train = [q for i, (q, _) in enumerate(rows) if i % 10 != 9]
        test = [q for i, (q, _) in enumerate(rows) if i % 10 == 9] or train[-1:]
    return ListTask(f"jsonl:{p.name}", train, test)


def get_task(spec: str, seed: int = 0) -> Task:
    """A task from its spec string (see the module docstring); errors are one line, before any work."""
    name, _, arg = spec.partition(":")
    if name == "gsm8k":
        return gsm8k_task(arg or None)
    if name == "arithmetic":
        try:
            level = int(arg) if arg else 2
        except ValueError:
            raise ChatforgeError(f"arithmetic level must be an integer 0-4, not {arg!r}") from None
        return ArithmeticTask(level, seed)
    if name == "pairs":  # RLHF prompts from preference pairs (issue 20; the reward is a reward model)
        from chatforge.posttrain.pairs import prompt_task

        return prompt_task(arg or "hh-rlhf", seed)
    if name == "jsonl":
        if not arg:
            raise ChatforgeError("--task jsonl:PATH needs the path of the task file")
        return jsonl_task(arg)
    raise ChatforgeError(f"unknown task {spec!r}; use gsm8k, arithmetic[:LEVEL] or jsonl:PATH")
