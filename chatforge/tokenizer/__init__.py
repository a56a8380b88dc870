"""chatforge.tokenizer: our byte-level BPE (trainer, tiktoken-backed encoding, chat rendering, HF export)."""

from chatforge.tokenizer.corpus import iter_texts
from chatforge.tokenizer.special import BOS, SPECIAL_TOKENS
from chatforge.tokenizer.tokenizer import Tokenizer
from chatforge.tokenizer.trainer import SPLIT_PATTERN, train_from_texts, train_tokenizer

__all__ = ["Tokenizer", "train_tokenizer", "train_from_texts", "iter_texts", "SPECIAL_TOKENS", "BOS",
           "SPLIT_PATTERN"]
