"""Preference-pair readers: hh-rlhf, TRL's explicit / implicit prompt formats, bad pairs counted."""

import gzip
import json
from collections import Counter

import pytest

from chatforge.common import ChatforgeError
from chatforge.posttrain.pairs import (BadPair, Pair, pair_batch, read_pairs, record_to_pair, split_pairs,
                                       tokenize_pair, tokenize_pairs)

HH = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the hen cross?",
      "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."}


def test_hh_rlhf_record():
    p = record_to_pair(HH)
    assert p.prompt == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Tell me a joke"}]
    assert (p.chosen, p.rejected) == ("Why did the hen cross?", "No.")


def test_trl_formats_explicit_and_implicit_prompt():
    conv = lambda *m: [{"role": r, "content": c} for r, c in m]  # noqa: E731
    explicit = record_to_pair({"prompt": conv(("user", "2+2?")), "chosen": conv(("assistant", "4")),
                               "rejected": conv(("assistant", "5"))})
    standard = record_to_pair({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    implicit = record_to_pair({"chosen": conv(("user", "2+2?"), ("assistant", "4")),
                               "rejected": conv(("user", "2+2?"), ("assistant", "5"))})
    for p in (explicit, standard, implicit):
        assert p == Pair([{"role": "user", "content": "2+2?"}], "4", "5")
    text = record_to_pair({"chosen": "The sky is blue today.", "rejected": "The sky is green today."})
    assert text.prompt[0]["content"] == "The sky is" and (text.chosen, text.rejected) == ("blue today.", "green today.")


@pytest.mark.parametrize("rec,reason", [
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "chosen == rejected"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "an empty side"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}, "disagree on the prompt"),
    ({"text": "hi"}, "not a preference record"),
])
def test_bad_pairs_raise_with_reason(rec, reason):
    with pytest.raises(BadPair, match=reason):
        record_to_pair(rec)


def test_reader_counts_and_skips_bad_lines(tmp_path, tiny_tokenizer):
    f = tmp_path / "p.jsonl.gz"
    lines = [json.dumps(HH), "not json", json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}),
             json.dumps({"prompt": "q", "chosen": "", "rejected": "b"}),
             json.dumps({"prompt": "long " * 400, "chosen": "a", "rejected": "b"})]
    with gzip.open(f, "wt") as g:
        g.write("\n".join(lines) + "\n")
    stats = Counter()
    pairs = read_pairs(f, stats)
    assert len(pairs) == 2 and stats["read"] == 2 and stats["skipped: not JSON"] == 1
    assert stats["skipped: chosen == rejected"] == 1 and stats["skipped: an empty side"] == 1
    ids = tokenize_pairs(tiny_tokenizer, pairs, max_len=128, stats=stats)
    assert len(ids) == 1 and stats["skipped: longer than the context (128 tokens)"] == 1
    with pytest.raises(ChatforgeError, match="no usable"):
        (tmp_path / "bad.jsonl").write_text("x\n")
        read_pairs(tmp_path / "bad.jsonl")


def test_hh_rlhf_shared_file(shared_data):
    stats = Counter()
    pairs = read_pairs("hh-rlhf", stats)
    assert len(pairs) > 2000 and stats["read"] == len(pairs)
    assert all(p.prompt[-1]["role"] == "user" and p.chosen != p.rejected for p in pairs)


def test_tokenized_pair_and_batch_mask_only_replies(tiny_tokenizer):
    tok = tiny_tokenizer
    pairs = [tokenize_pair(tok, record_to_pair(HH)),
             tokenize_pair(tok, Pair([{"role": "user", "content": "Hi"}], "Hello there friend", "Go away"))]
    x, y, last = pair_batch(pairs, tok.bos_id, "cpu")
    assert x.shape[0] == 4
    for row, (p, reply) in enumerate([(p, p.chosen) for p in pairs] + [(p, p.rejected) for p in pairs]):
        learned = [int(t) for t in y[row] if t != -1]
        assert learned == reply and tok.decode(reply).endswith("<|assistant_end|>")
        assert int(x[row, last[row]]) == tok.special_id("<|assistant_end|>")
        assert x[row, :len(p.prompt)].tolist() == p.prompt


def test_split_is_seeded_and_disjoint():
    a, b = split_pairs(list(range(100)), 0.1, seed=3)
    assert len(b) == 10 and not set(a) & set(b) and (a, b) == split_pairs(list(range(100)), 0.1, seed=3)
