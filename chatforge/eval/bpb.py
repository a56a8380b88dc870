"""Bits per byte on held-out text: tokenizer-independent, so models with different vocabularies
compare. bpb = (sum of next-token losses in nats) / (ln 2 * number of bytes those tokens cover).

Held-out text is WikiText-2 test by default (../shared/data/text). Its "tokens" form splits
punctuation (` @-@ `, ` , `); we undo that with the usual WikiText detokenizer rules so the model
sees ordinary prose. `<unk>` (WikiText's rare-word marker) is kept as literal text.
Each article is one document (`<|bos|>` + tokens); long ones are cut into context-sized windows
evaluated independently (each window after the first starts without context: a slight
pessimism, the same for every model of a given context length).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from chatforge.common import ChatforgeError, shared_data_dir

WIKITEXT_TEST = "text/wikitext-2-test.tokens.txt"

_DETOK = [
    (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."),
    (" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "),
    (" 's", "'s"), (" n't", "n't"), (" 're", "'re"), (" 've", "'ve"), (" 'll", "'ll"), (" 'd", "'d"),
    ("( ", "("), (" )", ")"), ("[ ", "["), (" ]", "]"), ("{ ", "{"), (" }", "}"),
    (" %", "%"), ("$ ", "$"),
]
_QUOTES = re.compile(r'"\s*([^"]*?)\s*"')


def wikitext_detokenize(text: str) -> str:
    for a, b in _DETOK:
        text = text.replace(a, b)
    text = _QUOTES.sub(r'"\1"', text)
    text = re.sub(r" \.$", ".", text, flags=re.M)
    return text


_WIKI_HEADING = re.compile(r"^ = [^=].* = $")


def wikitext_split(text: str) -> list[list[str]]:
    """WikiText's tokenized form -> its articles (split before each top-level ` = Title = ` line),
    each a list of its non-empty, stripped lines."""
    articles, current = [], []
    for line in text.split("\n"):
        if _WIKI_HEADING.match(line) and current:
            articles.append(current)
            current = []
        if line.strip():
            current.append(line.strip())
    if current:
        articles.append(current)
    return articles


def wikitext_articles(path=None) -> list[str]:
    """WikiText file -> list of detokenized articles (split at top-level ` = Title = ` lines)."""
    if path is None:
        root = shared_data_dir()
        if root is None:
            raise ChatforgeError("../shared/data is absent; pass --bpb-text PATH with held-out text")
        path = root / WIKITEXT_TEST
    path = Path(path)
    if not path.is_file():
        raise ChatforgeError(f"{path} not found; pass a held-out text file")
    return [wikitext_detokenize("\n".join(a)) for a in wikitext_split(path.read_text(encoding="utf-8"))]


def text_documents(path) -> list[str]:
    """Plain text held-out file: WikiText format when it looks like it, else blank-line paragraphs
    grouped into ~4 KB documents."""
    path = Path(path)
    head = path.read_text(encoding="utf-8", errors="replace")
    if " @-@ " in head[:200_000] or re.search(r"^ = [^=].* = $", head[:5000], flags=re.M):
        return wikitext_articles(path)
    docs, buf = [], ""
    for para in re.split(r"\n\s*\n", head):
        buf += para.strip() + "\n\n"
        if len(buf) > 4096:
            docs.append(buf.strip())
            buf = ""
    if buf.strip():
        docs.append(buf.strip())
    return docs


def bits_per_byte(model, tokenizer, documents, device="cpu", seq_len=None, max_tokens=None,
                  batch_size=8, progress=None) -> dict:
    """Score `documents`; returns {bpb, loss (nats/token), tokens, bytes, documents}.

    max_tokens caps the number of predicted tokens (the first documents in order), for CPU runs.
    """
    import torch
    import torch.nn.functional as F

    seq_len = seq_len or getattr(getattr(model, "config", None), "seq_len", None) or 1024
    byte_len = torch.tensor(tokenizer.token_byte_lengths(), dtype=torch.float64)
    windows, n_pred, n_docs = [], 0, 0
    for doc in documents:
        ids = [tokenizer.bos_id] + tokenizer.encode(doc)
        n_docs += 1
        # windows of seq_len+1 tokens overlapping by one: every token after <|bos|> predicted once
        for s in range(0, len(ids) - 1, seq_len):
            w = ids[s:s + seq_len + 1]
            if max_tokens and n_pred + len(w) - 1 > max_tokens:
                w = w[:max_tokens - n_pred + 1]
            if len(w) >= 2:
                windows.append(w)
                n_pred += len(w) - 1
            if max_tokens and n_pred >= max_tokens:
                break
        if max_tokens and n_pred >= max_tokens:
            break
    if not windows:
        raise ChatforgeError("no held-out text to score; the documents are empty")

    total_nats = 0.0
    total_bytes = 0.0
    windows.sort(key=len)  # similar lengths per batch: less padding
    was_training = getattr(model, "training", False)
    model.eval()
    with torch.no_grad():
        for b in range(0, len(windows), batch_size):
            batch = windows[b:b + batch_size]
            width = max(len(w) for w in batch) - 1
            x = torch.zeros((len(batch), width), dtype=torch.long)
            y = torch.full((len(batch), width), -1, dtype=torch.long)
            for i, w in enumerate(batch):
                x[i, :len(w) - 1] = torch.tensor(w[:-1])
                y[i, :len(w) - 1] = torch.tensor(w[1:])
            logits = model(x.to(device)).float()
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1).to(device),
                                   ignore_index=-1, reduction="sum")
            total_nats += float(loss)
            valid = y[y >= 0]
            total_bytes += float(byte_len[valid].sum())
            if progress is not None:
                progress(int(valid.numel()))
    if was_training:
        model.train()
    return {
        "bpb": total_nats / (math.log(2) * total_bytes) if total_bytes else None,
        "loss": total_nats / n_pred,
        "tokens": n_pred,
        "bytes": int(total_bytes),
        "documents": n_docs,
    }
