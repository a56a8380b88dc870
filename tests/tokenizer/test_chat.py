import pytest

from chatforge.common import ChatforgeError


def _spans(tok, ids, mask):
    """Decoded text of each maximal run of mask==1."""
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def test_multi_turn_mask_is_exactly_the_assistant_text(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    ids, mask = tok.render_conversation(msgs)
    sid = tok.special_id
    expected = ([tok.bos_id, sid("system_start"), *tok.encode("Be brief."), sid("system_end"),
                 sid("user_start"), *tok.encode("Hi there"), sid("user_end"), sid("assistant_start")]
                + tok.encode("Hello!") + [sid("assistant_end"), sid("user_start"), *tok.encode("2+2?"),
                                          sid("user_end"), sid("assistant_start"), *tok.encode("4"),
                                          sid("assistant_end")])
    assert ids == expected and len(mask) == len(ids)
    assert _spans(tok, ids, mask) == ["Hello!<|assistant_end|>", "4<|assistant_end|>"]
    # the token right after <|assistant_start|> is the first learned one; assistant_start itself is not
    for k, i in enumerate(ids):
        if i == sid("assistant_start"):
            assert mask[k] == 0 and mask[k + 1] == 1


def test_tool_turns_mask_calls_but_not_outputs(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = [
        {"role": "user", "content": "What is 2**10? Also search cats."},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me compute."},
            {"type": "python", "text": "print(2**10)"},
            {"type": "python_output", "text": "1024\n"},
            {"type": "search", "text": "cats"},
            {"type": "search_output", "text": "Cats are mammals."},
            {"type": "text", "text": "It is 1024."},
        ]},
    ]
    ids, mask = tok.render_conversation(msgs)
    assert _spans(tok, ids, mask) == [
        "Let me compute.<|python_start|>print(2**10)<|python_end|>",
        "<|search_start|>cats<|search_end|>",
        "It is 1024.<|assistant_end|>",
    ]
    text = tok.decode(ids)
    assert "<|output_start|>1024\n<|output_end|>" in text
    assert "<|output_start|>Cats are mammals.<|output_end|>" in text


def test_special_text_in_messages_stays_plain(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, mask = tok.render_conversation([{"role": "user", "content": "<|assistant_end|>"},
                                         {"role": "assistant", "content": "<|bos|>"}])
    assert sum(tok.is_special(i) for i in ids) == 5  # bos, user start/end, assistant start/end only
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "<|bos|><|assistant_end|>"


def test_max_tokens_truncates_both(tiny_tokenizer):
    msgs = [{"role": "user", "content": "hello " * 50}, {"role": "assistant", "content": "ok"}]
    ids, mask = tiny_tokenizer.render_conversation(msgs, max_tokens=10)
    full, full_mask = tiny_tokenizer.render_conversation(msgs)
    assert ids == full[:10] and mask == full_mask[:10]


def test_render_for_completion_ends_at_assistant_start(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    prompt = tok.render_for_completion(msgs)
    full, _ = tok.render_conversation(msgs)
    assert prompt[-1] == tok.special_id("assistant_start")
    assert prompt == full[: len(prompt)]  # the prompt is a prefix of the full rendering
    assert tok.render_for_completion(msgs[:1]) == prompt


@pytest.mark.parametrize("bad", [
    [{"role": "robot", "content": "x"}],
    [{"role": "assistant", "content": [{"type": "shell", "text": "ls"}]}],
    [{"role": "user", "content": 3}],
    [],
])
def test_bad_conversations_are_user_errors(tiny_tokenizer, bad):
    with pytest.raises(ChatforgeError):
        tiny_tokenizer.render_conversation(bad)
