"""A byte tokenizer and a bigram 'model' whose answers are known, for eval tests without other stages."""

import torch


class ByteTokenizer:
    """ids 0..255 are bytes; 256 is <|bos|>."""

    bos_id = 256
    vocab_size = 257

    def encode(self, text, allowed_special=()):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_byte_lengths(self):
        return [1] * 256 + [0]


class BigramModel(torch.nn.Module):
    """logits[t] = table[idx[t]]: the next-token distribution depends only on the current token."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, idx, targets=None):
        return self.table[idx]


def bigram_preferring(pairs, strength=5.0, vocab=257):
    """A bigram table that is uniform except that after byte a, byte b gets +strength."""
    table = torch.zeros(vocab, vocab)
    for a, b in pairs:
        table[ord(a) if isinstance(a, str) else a, ord(b)] += strength
    return table
