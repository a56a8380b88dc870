"""Export to Hugging Face `tokenizer.json` giving the same ids as our tiktoken-backed encoding.

tiktoken's BPE, per regex piece: if the whole piece is a token, emit it; otherwise repeatedly merge
the adjacent pair whose concatenation is the lowest-ranked token. HF's BPE merges by the rank of
listed pairs. To make the two agree we (1) set `ignore_merges` (the whole-piece shortcut) and
(2) list, for every token in rank order, *every* split of it into two tokens, not only the split we
trained (a token learned as "ab"+"c" can also arise from "a"+"bc" in tiktoken).
Byte-level: each byte is shown as one printable character (GPT-2's bytes_to_unicode table).
By default HF turns special-token text found in plain text into special ids; ours does not unless
allowed. Set `tokenizer.encode_special_tokens = True` (tokenizers) or `split_special_tokens=True`
(transformers) to match `Tokenizer.encode(text)`; leave it off to match `allowed_special="all"`.
"""

from __future__ import annotations

from functools import lru_cache

from chatforge.common import atomic_write_json
from chatforge.tokenizer.special import BOS


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _show(b: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[x] for x in b)


def hf_merges(tok) -> list[str]:
    """Every (left, right) split of every token, ordered by the rank of the token they form."""
    ranks = {tok.token_bytes(i): i for i in range(tok.n_ordinary)}
    out = []
    for i in range(256, tok.n_ordinary):
        t = tok.token_bytes(i)
        for k in range(1, len(t)):
            left, right = t[:k], t[k:]
            if left in ranks and right in ranks:
                out.append(f"{_show(left)} {_show(right)}")
    return out


def to_hf_dict(tok) -> dict:
    vocab = {_show(tok.token_bytes(i)): i for i in range(tok.n_ordinary)}
    added = [{"id": tok.special_to_id[s], "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for s in tok.special_tokens]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": True, "vocab": vocab, "merges": hf_merges(tok)},
    }


def write_hf_files(tok, directory) -> None:
    atomic_write_json(directory / "tokenizer.json", to_hf_dict(tok))
    atomic_write_json(directory / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": "<|assistant_end|>",
        "additional_special_tokens": [s for s in tok.special_tokens if s != BOS
                                      and s != "<|assistant_end|>"],
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,
    })
