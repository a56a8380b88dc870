"""Pulling the final answer out of a model's text, for GSM8K-style numeric questions.

GSM8K reference solutions end with `#### N`. Model replies may follow that, or just say the number
somewhere near the end ("... so she makes $18."). We take `#### N` when present, else the last
number in the text. Numbers are normalised (commas, `$`, `%`, trailing `.`/`.0`) so that "1,000",
"$1000.00" and "1000" compare equal.
"""

from __future__ import annotations

import re

# a signed number with optional thousands separators and decimals: -1,234.50  3  .5
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_HASHES = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_BOXED = re.compile(r"\\boxed\{\s*\$?(-?[\d,]*\.?\d+)")


def normalize_number(s: str) -> str | None:
    """'1,000.00' -> '1000', '$-3.50' -> '-3.5', 'abc' -> None."""
    s = s.strip().replace(",", "").replace("$", "").replace("%", "").rstrip(".")
    if not s or s in {"-", "."}:
        return None
    try:
        value = float(s)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value).rstrip("0").rstrip(".")


def _numbers(text: str) -> list[str]:
    out = []
    for m in _NUMBER.finditer(text):
        tok = m.group(0)
        if any(ch.isdigit() for ch in tok):
            out.append(tok)
    return out


def extract_answer(text: str) -> str | None:
    """The final numeric answer in `text`, normalised; None when there is no number at all.

    Priority: `#### N` (GSM8K's format; the last one if repeated), `\\boxed{N}`, else the last number.
    """
    for pattern in (_HASHES, _BOXED):
        hits = pattern.findall(text)
        if hits:
            return normalize_number(hits[-1])
    nums = _numbers(text)
    return normalize_number(nums[-1]) if nums else None


def gsm8k_reference(answer_field: str) -> str:
    """The gold answer of a GSM8K record's `answer` field (the text after `####`)."""
    gold = answer_field.rsplit("####", 1)[-1]
    value = normalize_number(gold)
    if value is None:
        raise ValueError(f"no #### answer in GSM8K solution: {answer_field[-80:]!r}")
    return value


def answers_match(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    try:
        return abs(float(predicted) - float(gold)) < 1e-6
    except ValueError:
        return predicted == gold
