"""User conversation formats (alpaca, ShareGPT, OpenAI messages with tool calls) on small files."""

import json
from collections import Counter

import pytest

from chatforge.common import ChatforgeError
from chatforge.posttrain.conversation import read_conversations_jsonl, write_conversations_jsonl
from chatforge.posttrain.formats import load_conversations


def _jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_alpaca_json_array(tmp_path):
    p = tmp_path / "alpaca.json"
    p.write_text(json.dumps([
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!", "system": "Be brief."},
        {"instruction": "Empty answer.", "input": "", "output": ""},
    ]))
    stats = Counter()
    convs = list(load_conversations(p, stats=stats))
    assert convs[0]["messages"] == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                                    {"role": "assistant", "content": "5"}]
    assert convs[1]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert stats["read"] == 2 and stats["skipped: empty assistant message"] == 1


def test_sharegpt_jsonl(tmp_path):
    p = _jsonl(tmp_path / "sg.jsonl", [
        {"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "q1"},
                           {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"},
                           {"from": "gpt", "value": "a2"}]},
        {"conversations": [{"from": "gpt", "value": "starts with the bot"}]},
        {"conversations": [{"from": "alien", "value": "?"}]},
    ])
    stats = Counter()
    convs = list(load_conversations(p, stats=stats))
    assert len(convs) == 1
    assert [m["role"] for m in convs[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert stats["read"] == 1 and sum(stats.values()) == 3


def test_openai_messages_with_tool_calls(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "python", "arguments": json.dumps({"code": "6*7"})}}
    p = _jsonl(tmp_path / "oa.jsonl", [
        {"messages": [
            {"role": "system", "content": "You can run python."},
            {"role": "user", "content": [{"type": "text", "text": "What is 6*7?"}]},
            {"role": "assistant", "content": "Let me compute.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ]},
        {"messages": [{"role": "user", "content": "x"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"type": "function", "function": {"name": "weather", "arguments": "{}"}}]}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        "not an object",
    ])
    (tmp_path / "oa.jsonl").write_text((tmp_path / "oa.jsonl").read_text() + "{broken json\n")
    stats = Counter()
    convs = list(load_conversations(p, stats=stats))
    assert convs[0]["messages"][2] == {"role": "assistant", "content": [
        {"type": "text", "text": "Let me compute."}, {"type": "python", "text": "6*7"},
        {"type": "python_output", "text": "42"}, {"type": "text", "text": "It is 42."}]}
    assert convs[1]["messages"][1] == {"role": "assistant", "content": "hello"}
    assert stats["read"] == 2
    assert stats["skipped: unsupported tool 'weather' (only python and search tools map to our tokens)"] == 1
    assert stats["skipped: not JSON"] == 1 and stats["skipped: record is not a JSON object"] == 1


def test_our_format_round_trips(tmp_path):
    conv = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": [
        {"type": "python", "text": "2+2"}, {"type": "python_output", "text": "4"}, {"type": "text", "text": "4"}]}]}
    p = tmp_path / "ours.jsonl"
    assert write_conversations_jsonl(p, [conv]) == 1
    assert list(read_conversations_jsonl(p)) == [conv]
    assert list(load_conversations(p, format="openai")) == [conv]


def test_unknown_format_and_missing_file(tmp_path):
    p = _jsonl(tmp_path / "x.jsonl", [{"text": "just text"}])
    with pytest.raises(ChatforgeError, match="cannot tell the conversation format"):
        list(load_conversations(p))
    with pytest.raises(ChatforgeError, match="does not exist"):
        list(load_conversations(tmp_path / "nope.jsonl"))
    with pytest.raises(ChatforgeError, match="unknown conversation format"):
        list(load_conversations(p, format="csv"))
