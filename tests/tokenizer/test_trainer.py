import random
from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.common import ChatforgeError
from chatforge.tokenizer import train_from_texts
from chatforge.tokenizer.trainer import SPLIT_PATTERN, count_words, learn_merges

# ---- reference: a tiny, obviously-correct BPE that recounts every pair before every merge.
# Same rules as the real trainer: most frequent pair wins, ties go to the smaller (left, right)
# id pair, and a merge whose bytes already form a token reuses that token's id.


def naive_word_counts(texts):
    c = Counter()
    for t in texts:
        c.update(regex.findall(SPLIT_PATTERN, t))
    return c


def naive_bpe(word_counts, n_tokens):
    words = {}
    for w, c in word_counts.items():
        key = tuple(w.encode("utf-8"))
        words[key] = words.get(key, 0) + c
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    while len(vocab) < 256 + n_tokens:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        new = vocab[a] + vocab[b]
        if new in vocab:
            nid = vocab.index(new)
        else:
            nid = len(vocab)
            vocab.append(new)
        merges.append((a, b, nid))
        merged = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(nid)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
    return merges


def _ours(texts, n):
    merges, _ = learn_merges(count_words(texts, num_proc=1, progress=False), n, progress=False)
    return merges


def test_merges_match_naive_reference_on_real_text(shared_data):
    text = (shared_data / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000]
    texts = [text[i:i + 3000] for i in range(0, len(text), 3000)]
    assert _ours(texts, 150) == naive_bpe(naive_word_counts(texts), 150)


def test_merges_match_naive_reference_on_repo_text():
    from chatforge.common import REPO_ROOT

    texts = [(REPO_ROOT / "chatforge" / "tokenizer" / "trainer.py").read_text(encoding="utf-8")]
    assert _ours(texts, 120) == naive_bpe(naive_word_counts(texts), 120)


# A small alphabet makes ties, repeated runs ("aaaa") and competing overlaps frequent.
small_texts = st.lists(st.text(alphabet="aab bc\n1é", min_size=0, max_size=40), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(small_texts, st.integers(1, 30))
def test_merges_match_naive_reference_fuzzed(texts, n):
    assert _ours(texts, n) == naive_bpe(naive_word_counts(texts), n)


def test_deterministic_across_processes_and_order():
    from chatforge.common import REPO_ROOT

    files = sorted((REPO_ROOT / "chatforge").rglob("*.py"))
    texts = [p.read_text(encoding="utf-8") for p in files] * 3
    a = train_from_texts(texts, 600, num_proc=1, progress=False)
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    # tiny batches so the 2-process path really runs, in a different order
    counts = count_words(iter(shuffled), num_proc=2, progress=False, batch_chars=20_000)
    merges, _ = learn_merges(counts, 600 - 276, progress=False)
    assert a.merges == merges and a.vocab_size == 600


def test_split_pattern_groups_digits_by_three():
    import regex

    assert regex.findall(SPLIT_PATTERN, "1234567 abc") == ["123", "456", "7", " abc"]
    assert regex.findall(SPLIT_PATTERN, "I'm  here\n\n x") == ["I", "'m", " ", " here", "\n\n", " x"]


def test_vocab_too_small_is_a_user_error():
    with pytest.raises(ChatforgeError, match="at least 276"):
        train_from_texts(["hello"], 275, num_proc=1, progress=False)


def test_empty_corpus_is_a_user_error():
    with pytest.raises(ChatforgeError, match="empty"):
        train_from_texts(["", ""], 300, num_proc=1, progress=False)


def test_tiny_corpus_stops_early_with_smaller_vocab():
    tok = train_from_texts(["abab"], 1000, num_proc=1, progress=False)
    assert tok.vocab_size < 1000 and tok.decode(tok.encode("abab")) == "abab"


def test_max_words_bounds_the_table_and_keeps_frequent_words():
    rare = ["".join(chr(97 + int(d)) for d in str(i * 7919)) for i in range(3000)]  # distinct letter words
    texts = [f"common words here {r}" for r in rare]
    full = count_words(texts, num_proc=1, progress=False, batch_chars=2000)
    capped = count_words(texts, num_proc=1, progress=False, batch_chars=2000, max_words=500)
    assert len(full) > 3000 and len(capped) <= 500
    for w in ("common", " words", " here"):
        assert capped[w] == full[w] == 3000
