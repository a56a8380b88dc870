"""Multiple-choice evaluation by log-likelihood, and loaders for the HellaSwag, ARC and MMLU formats.

A question is a context plus N candidate continuations. The model never generates: for each choice
we feed `<|bos|> context choice` and add up log p(choice tokens | everything before). The answer is
the choice with the highest sum (`acc`), or the highest sum per byte of the choice (`acc_norm`,
which removes the bias toward short choices; lm-evaluation-harness normalises the same way).
Context and choice are encoded separately, so the choice's tokens are the same whatever the
context ends with (the choice carries its own leading space).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from chatforge.common import ChatforgeError


@dataclass
class MCExample:
    context: str
    choices: list[str]
    label: int  # index of the correct choice
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- scoring


def choice_logprob(logprobs_row, target_ids, start: int) -> float:
    """Sum of log p(target_ids[i]) read at positions start-1+i of one row of log-softmaxed logits.

    logits at position t predict the token at t+1, hence the -1.
    """
    total = 0.0
    for i, tok in enumerate(target_ids):
        total += float(logprobs_row[start - 1 + i, tok])
    return total


def _model_max_len(model) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("seq_len", "sequence_len", "max_seq_len", "block_size"):
        if cfg is not None and getattr(cfg, name, None):
            return int(getattr(cfg, name))
    return None


def score_choices(model, tokenizer, examples, device="cpu", max_len=None, batch_rows=16, progress=None):
    """Log-likelihood of every choice of every example: a list (per example) of lists of floats.

    `model(idx)` must return logits [B, T, V]; `tokenizer` needs encode() and bos_id.
    Context tokens are dropped from the left when a row would not fit max_len.
    """
    import torch

    max_len = max_len or _model_max_len(model) or 1024
    rows = []  # (example index, choice index, ids, start of choice)
    for ei, ex in enumerate(examples):
        ctx = tokenizer.encode(ex.context)
        for ci, choice in enumerate(ex.choices):
            cont = tokenizer.encode(choice)
            if not cont:
                raise ChatforgeError(f"empty choice {ci} in example {ei}; every choice needs some text")
            cont = cont[-(max_len - 1):]
            keep = max(0, max_len - 1 - len(cont))
            ids = [tokenizer.bos_id] + (ctx[-keep:] if keep else []) + cont
            rows.append((ei, ci, ids, len(ids) - len(cont)))

    scores = [[0.0] * len(ex.choices) for ex in examples]
    model_was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    with torch.no_grad():
        for b in range(0, len(rows), batch_rows):
            batch = rows[b:b + batch_rows]
            width = max(len(r[2]) for r in batch)
            idx = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (_, _, ids, _) in enumerate(batch):
                idx[i, :len(ids)] = torch.tensor(ids)  # right padding: never seen by real tokens
            logits = model(idx.to(device))
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for i, (ei, ci, ids, start) in enumerate(batch):
                scores[ei][ci] = choice_logprob(logprobs[i], ids[start:], start)
            if progress is not None:
                progress(len(batch))
    if model_was_training:
        model.train()
    return scores


def mc_metrics(examples, scores) -> dict:
    """acc (argmax of summed log-likelihood) and acc_norm (argmax of log-likelihood per byte)."""
    if not examples:
        return {"n": 0, "acc": None, "acc_norm": None, "chance": None}
    correct = correct_norm = 0
    for ex, sc in zip(examples, scores):
        norm = [s / max(1, len(c.encode("utf-8"))) for s, c in zip(sc, ex.choices)]
        correct += int(max(range(len(sc)), key=sc.__getitem__) == ex.label)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == ex.label)
    n = len(examples)
    chance = sum(1 / len(ex.choices) for ex in examples) / n
    return {"n": n, "acc": correct / n, "acc_norm": correct_norm / n, "chance": chance}


def evaluate_mc(model, tokenizer, examples, device="cpu", max_len=None, progress=None) -> dict:
    scores = score_choices(model, tokenizer, examples, device=device, max_len=max_len, progress=progress)
    return mc_metrics(examples, scores)


# ---------------------------------------------------------------- loaders


def _read_jsonl(path):
    path = Path(path)
    if not path.is_file():
        raise ChatforgeError(f"{path} not found; pass the path of the task's .jsonl file")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ChatforgeError(f"{path}:{lineno}: not JSON ({e.msg}); expected one object per line") from None


def _hellaswag_clean(text: str) -> str:
    # HellaSwag's WikiHow items carry markup like "[header]" / "[title]"; lm-eval strips it the same way
    text = text.strip().replace(" [title]", ". ")
    while "[" in text and "]" in text.split("[", 1)[1]:
        head, rest = text.split("[", 1)
        text = head + rest.split("]", 1)[1]
    return text.replace("  ", " ")


def load_hellaswag(path, limit=None) -> list[MCExample]:
    """HellaSwag jsonl: `ctx` (or ctx_a + ctx_b), `endings` (4 strings), `label` (int or str)."""
    out = []
    for rec in _read_jsonl(path):
        ctx = rec.get("ctx") or (rec.get("ctx_a", "") + " " + rec.get("ctx_b", "").capitalize())
        if rec.get("activity_label"):
            ctx = f"{rec['activity_label']}: {ctx}"
        out.append(MCExample(
            context=_hellaswag_clean(ctx),
            choices=[" " + _hellaswag_clean(e) for e in rec["endings"]],
            label=int(rec["label"]),
            meta={"id": rec.get("ind", rec.get("id", len(out)))},
        ))
        if limit and len(out) >= limit:
            break
    return out


def load_arc(path, limit=None) -> list[MCExample]:
    """ARC jsonl: `question` {stem, choices [{label, text}]}, `answerKey` (a label: 'A'.. or '1'..)."""
    out = []
    for rec in _read_jsonl(path):
        q = rec["question"]
        labels = [c["label"] for c in q["choices"]]
        if rec["answerKey"] not in labels:
            raise ChatforgeError(f"ARC item {rec.get('id')}: answerKey {rec['answerKey']!r} is not one of {labels}")
        out.append(MCExample(
            context=f"Question: {q['stem']}\nAnswer:",
            choices=[" " + c["text"] for c in q["choices"]],
            label=labels.index(rec["answerKey"]),
            meta={"id": rec.get("id", len(out))},
        ))
        if limit and len(out) >= limit:
            break
    return out


MMLU_LETTERS = ["A", "B", "C", "D"]


def _mmlu_subject(path: Path) -> str:
    name = path.stem
    for suffix in ("_test", "_val", "_dev"):
        name = name.removesuffix(suffix)
    return name.replace("_", " ")


def load_mmlu(path, limit=None) -> list[MCExample]:
    """MMLU csv (file or directory of them): rows `question, A, B, C, D, answer` (answer a letter).

    The original files have no header row; a header row `question,A,B,C,D,answer` is skipped too.
    The prompt lists the options and the model scores the answer letter, as in the MMLU paper.
    """
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise ChatforgeError(f"no MMLU .csv files at {path}; pass a csv file or a directory of them")
    out = []
    for f in files:
        subject = _mmlu_subject(f)
        with open(f, encoding="utf-8", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if not row or (lineno == 1 and [c.strip().lower() for c in row] == ["question", "a", "b", "c", "d", "answer"]):
                    continue
                if len(row) != 6 or row[5].strip() not in MMLU_LETTERS:
                    raise ChatforgeError(f"{f}:{lineno}: expected 6 columns (question, A, B, C, D, answer letter)")
                q, *opts, ans = [c.strip() for c in row]
                options = "\n".join(f"{L}. {o}" for L, o in zip(MMLU_LETTERS, opts))
                out.append(MCExample(
                    context=f"The following is a multiple choice question about {subject}.\n\n{q}\n{options}\nAnswer:",
                    choices=[" " + L for L in MMLU_LETTERS],
                    label=MMLU_LETTERS.index(ans),
                    meta={"subject": subject},
                ))
                if limit and len(out) >= limit:
                    return out
    return out

