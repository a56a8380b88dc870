"""The Tokenizer: our learned merges, encoded and decoded by tiktoken (Rust, all cores).

A tokenizer directory holds:
  chatforge_bpe.json     our merges (the source of truth), split pattern, special tokens, training info
  tokenizer.json         the same tokenizer for Hugging Face `tokenizers` / transformers (same ids)
  tokenizer_config.json  so `transformers.AutoTokenizer.from_pretrained(DIR)` works
Ids: 0..255 are the bytes, then merged tokens in the order learned, then the special tokens
(in the order of special.SPECIAL_TOKENS) as the last ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from chatforge.common import ChatforgeError, atomic_write_json
from chatforge.tokenizer.special import BOS, SPECIAL_TOKENS
from chatforge.tokenizer.trainer import SPLIT_PATTERN

NATIVE_FILE = "chatforge_bpe.json"
FORMAT_VERSION = 1


class Tokenizer:
    def __init__(self, merges, *, pattern: str = SPLIT_PATTERN, special_tokens=SPECIAL_TOKENS,
                 meta: dict | None = None, path: str | os.PathLike | None = None):
        import tiktoken

        self.merges = [tuple(int(x) for x in m) for m in merges]
        self.pattern = pattern
        self.meta = dict(meta or {})
        self.path = Path(path) if path is not None else None  # directory it was loaded from / saved to
        token_bytes = [bytes([i]) for i in range(256)]
        for a, b, nid in self.merges:
            if nid == len(token_bytes):
                token_bytes.append(token_bytes[a] + token_bytes[b])
            elif not (nid < len(token_bytes) and token_bytes[nid] == token_bytes[a] + token_bytes[b]):
                raise ChatforgeError(f"corrupt merges: merge {a} + {b} -> {nid} is out of order; "
                                     "retrain the tokenizer")
        self._token_bytes = token_bytes
        self.n_ordinary = len(token_bytes)
        self.special_tokens = list(special_tokens)
        self.special_to_id = {s: self.n_ordinary + i for i, s in enumerate(self.special_tokens)}
        self.vocab_size = self.n_ordinary + len(self.special_tokens)
        self.enc = tiktoken.Encoding(
            name=f"chatforge_bpe_{self.vocab_size}",
            pat_str=pattern,
            mergeable_ranks={tb: i for i, tb in enumerate(token_bytes)},
            special_tokens=self.special_to_id,
        )

    # ---- ids -------------------------------------------------------------------------------------
    def special_id(self, name: str) -> int:
        """Id of a special token, by its full text ("<|bos|>") or bare name ("bos")."""
        key = name if name.startswith("<|") else f"<|{name}|>"
        try:
            return self.special_to_id[key]
        except KeyError:
            raise ChatforgeError(f"unknown special token {name!r}; known: "
                                 + ", ".join(self.special_tokens)) from None

    @property
    def bos_id(self) -> int:
        return self.special_to_id[BOS]

    def is_special(self, i: int) -> bool:
        return i >= self.n_ordinary

    def token_bytes(self, i: int) -> bytes:
        """The bytes a token stands for (a special token's text for special ids)."""
        if i < self.n_ordinary:
            return self._token_bytes[i]
        return self.special_tokens[i - self.n_ordinary].encode()

    def token_byte_lengths(self) -> np.ndarray:
        """int32 [vocab_size]: bytes of text each id stands for; 0 for specials (bits-per-byte)."""
        out = np.zeros(self.vocab_size, dtype=np.int32)
        out[: self.n_ordinary] = [len(b) for b in self._token_bytes]
        return out

    # ---- encode / decode ---------------------------------------------------------------------------
    def encode(self, text: str, allowed_special=()) -> list[int]:
        """Ids of `text`. Special-token text is encoded as plain text unless listed in
        `allowed_special` (a collection of token strings, or "all")."""
        if not allowed_special:
            return self.enc.encode_ordinary(text)
        allowed = "all" if allowed_special == "all" else set(allowed_special)
        return self.enc.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(self, texts: list[str], num_threads: int | None = None,
                     allowed_special=()) -> list[list[int]]:
        """Encode many texts on all cores (tiktoken releases the GIL)."""
        n = num_threads or os.cpu_count() or 1
        if not allowed_special:
            return self.enc.encode_ordinary_batch(list(texts), num_threads=n)
        allowed = "all" if allowed_special == "all" else set(allowed_special)
        return self.enc.encode_batch(list(texts), num_threads=n, allowed_special=allowed,
                                     disallowed_special=())

    def decode(self, ids) -> str:
        """Text of `ids`; never raises (invalid UTF-8 becomes U+FFFD)."""
        return self.enc.decode([int(i) for i in ids], errors="replace")

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, path={str(self.path) if self.path else None})"

    # ---- chat --------------------------------------------------------------------------------------
    def render_conversation(self, messages, max_tokens: int | None = None):
        """(ids, mask) of a conversation; mask is 1 exactly on what the assistant writes."""
        from chatforge.tokenizer.chat import render_conversation

        return render_conversation(self, messages, max_tokens=max_tokens)

    def render_for_completion(self, messages) -> list[int]:
        """Prompt ids ending with <|assistant_start|> (a trailing assistant message is dropped)."""
        from chatforge.tokenizer.chat import render_for_completion

        return render_for_completion(self, messages)

    # ---- files -------------------------------------------------------------------------------------
    def save(self, directory, *, hf: bool = True) -> Path:
        """Write the tokenizer directory (atomically per file); also the HF export unless hf=False."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / NATIVE_FILE, {
            "format": "chatforge-bpe",
            "version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "meta": self.meta,
            "merges": [list(m) for m in self.merges],
        })
        if hf:
            from chatforge.tokenizer.hf_export import write_hf_files

            write_hf_files(self, d)
        self.path = d
        return d

    @classmethod
    def load(cls, directory) -> "Tokenizer":
        d = Path(directory)
        f = d / NATIVE_FILE
        if not f.is_file():
            raise ChatforgeError(f"{d} is not a tokenizer directory (no {NATIVE_FILE}); "
                                 "train one with `chatforge tokenizer train`")
        try:
            obj = json.loads(f.read_text(encoding="utf-8"))
            if obj.get("format") != "chatforge-bpe":
                raise ValueError("not a chatforge-bpe file")
            if obj.get("version", 0) > FORMAT_VERSION:
                raise ValueError(f"format version {obj['version']} is newer than this chatforge")
            return cls(obj["merges"], pattern=obj["pattern"], special_tokens=obj["special_tokens"],
                       meta=obj.get("meta"), path=d)
        except (ValueError, KeyError, TypeError) as e:
            raise ChatforgeError(f"{f} is unreadable ({e}); retrain the tokenizer") from None
