"""`chatforge tokenizer report`: compression, vocab usage and longest tokens on a text sample."""

from __future__ import annotations

import numpy as np


class HFTokenizerForReport:
    """A Hugging Face tokenizer.json (any model's) seen through the few methods `measure` uses."""

    def __init__(self, path):
        from tokenizers import Tokenizer as HFTokenizer

        self.hf = HFTokenizer.from_file(str(path))
        self.hf.encode_special_tokens = True  # special-token text counts as text, as in ours
        self.vocab_size = self.n_ordinary = self.hf.get_vocab_size()

    def encode_batch(self, texts):
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]


def load_any(directory):
    """Our tokenizer directory, or a directory/file holding only a Hugging Face tokenizer.json."""
    from pathlib import Path

    from chatforge.common import ChatforgeError
    from chatforge.tokenizer.tokenizer import NATIVE_FILE, Tokenizer

    d = Path(directory)
    if (d / NATIVE_FILE).is_file():
        return Tokenizer.load(d)
    hf = d if d.is_file() and d.suffix == ".json" else d / "tokenizer.json"
    if hf.is_file():
        try:
            return HFTokenizerForReport(hf)
        except Exception as e:  # tokenizers raises plain Exception on bad files
            raise ChatforgeError(f"{hf} is not a loadable tokenizer.json ({e})") from None
    raise ChatforgeError(f"{d} holds neither our tokenizer ({NATIVE_FILE}) nor a HF tokenizer.json")


def measure(tok, texts: list[str]) -> dict:
    ids = tok.encode_batch(texts)
    n_tokens = sum(map(len, ids))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_chars = sum(map(len, texts))
    used = np.zeros(tok.vocab_size, dtype=bool)
    for row in ids:
        used[row] = True
    return {
        "tokens": n_tokens,
        "bytes": n_bytes,
        "chars": n_chars,
        "bytes_per_token": n_bytes / n_tokens if n_tokens else 0.0,
        "chars_per_token": n_chars / n_tokens if n_tokens else 0.0,
        "vocab_used": int(used[: tok.n_ordinary].sum()),
        "vocab_ordinary": tok.n_ordinary,
    }


def longest_tokens(tok, k: int = 15) -> list[tuple[int, str]]:
    order = sorted(range(256, tok.n_ordinary), key=lambda i: (-len(tok.token_bytes(i)), i))[:k]
    return [(i, tok.token_bytes(i).decode("utf-8", errors="replace")) for i in order]


def report_text(tok, texts: list[str], others: dict | None = None, name: str = "ours") -> str:
    m = measure(tok, texts)
    lines = [
        f"tokenizer: {tok.path or '(unsaved)'}  vocab {tok.vocab_size:,} "
        f"({tok.n_ordinary:,} ordinary + {tok.vocab_size - tok.n_ordinary} special)",
    ]
    meta = tok.meta
    if meta.get("chars"):
        lines.append(f"trained on: {meta.get('files', '?')} files, {meta['chars']:,} chars, "
                     f"{meta.get('distinct_words', 0):,} distinct words")
    lines += [
        f"sample: {len(texts):,} texts, {m['chars']:,} chars, {m['bytes']:,} bytes -> {m['tokens']:,} tokens",
        f"bytes/token: {m['bytes_per_token']:.3f}   chars/token: {m['chars_per_token']:.3f}",
        f"vocab usage: {m['vocab_used']:,} of {m['vocab_ordinary']:,} ordinary tokens appear in the "
        f"sample ({100 * m['vocab_used'] / max(1, m['vocab_ordinary']):.1f}%)",
        "longest tokens:",
    ]
    for i, s in longest_tokens(tok):
        lines.append(f"  {i:>7}  {len(tok.token_bytes(i)):>3} bytes  {s!r}")
    if others:
        lines.append("")
        lines.append(f"{'tokenizer':<40} {'vocab':>8} {'tokens':>12} {'bytes/token':>12} {'vs ' + name:>10}")
        rows = [(name, tok, m)] + [(n, t, measure(t, texts)) for n, t in others.items()]
        for n, t, mm in rows:
            rel = mm["tokens"] / m["tokens"] if m["tokens"] else float("nan")
            lines.append(f"{n[-40:]:<40} {t.vocab_size:>8,} {mm['tokens']:>12,} "
                         f"{mm['bytes_per_token']:>12.3f} {rel:>9.3f}x")
        lines.append(f"(tokens relative to {name}: below 1 means that tokenizer compresses this text better)")
    return "\n".join(lines)
