"""Readers of the shared-data sets: on real files (skipped when absent) and on small files made here."""

import gzip
import json
from collections import Counter

import pytest

from chatforge.posttrain import sources
from chatforge.posttrain.conversation import validate_conversation


def test_t0_split_is_by_family_and_deterministic():
    assert sources.t0_split("ag_news_classify_with_choices") == "eval"
    assert sources.t0_split("ag_news_recommend") == "eval"
    assert sources.t0_split("rotten_tomatoes_Movie_Expressed_Sentiment_2") == "eval"
    assert sources.t0_split("dbpedia_14_given_a_choice_of_categories_") == "eval"
    assert sources.t0_split("glue_qqp_duplicate_or_not") == "eval"
    assert sources.t0_split("imdb_Movie_Expressed_Sentiment") == "train"
    assert sources.t0_split("glue_mrpc_equivalent") == "train"
    assert sources.t0_split("xsum_DOC_tldr") == "train"


def test_t0_real_file_splits_disjoint(shared_data):
    stats = Counter()
    train_templates, eval_templates = set(), set()
    for rec in sources.read_t0_records():
        (eval_templates if sources.t0_split(rec["template"]) == "eval" else train_templates).add(rec["template"])
        assert "<|endoftext|>" not in rec["completion"]
    assert eval_templates and train_templates and not (eval_templates & train_templates)
    assert len(eval_templates) == 27  # ag_news 7, dbpedia_14 4, rotten_tomatoes 10, glue_qqp 6
    first = next(sources.read_t0(split="eval", stats=stats))
    assert first["messages"][1]["content"] in {"World politics", "Sports", "Business", "Science and technology",
                                               "World", "Sci/Tech", "Business executive"}


def test_t0_small_file(tmp_path):
    p = tmp_path / "t0.jsonl"
    recs = [{"prompt": "Is it good?\n", "completion": "yes<|endoftext|>", "template": "imdb_x"},
            {"prompt": "Topic?", "completion": "Sports<|endoftext|>", "template": "ag_news_classify"},
            {"prompt": "Type?", "completion": "<|endoftext|>", "template": "trec_trec1"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    stats = Counter()
    train = list(sources.read_t0(p, "train", stats))
    assert train == [{"messages": [{"role": "user", "content": "Is it good?"}, {"role": "assistant", "content": "yes"}]}]
    assert stats["skipped: empty assistant message"] == 1
    assert [c["messages"][1]["content"] for c in sources.read_t0(p, "eval")] == ["Sports"]


def test_hh_parse_multi_turn_and_merge():
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a\n\nHuman: b\n\nAssistant: ok"
    msgs = sources.parse_hh_dialogue(text)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[2]["content"] == "a\n\nb"


def test_hh_small_file_drops_trailing_human(tmp_path):
    p = tmp_path / "hh.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2", "rejected": "x"}) + "\n")
        f.write(json.dumps({"chosen": "\n\nHuman: q\n\nAssistant:", "rejected": "x"}) + "\n")
    stats = Counter()
    convs = list(sources.read_hh_rlhf(p, stats=stats))
    assert convs == [{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]}]
    assert stats["read"] == 1 and sum(stats.values()) == 2


def test_hh_real_file(shared_data):
    convs = list(sources.read_hh_rlhf())
    assert len(convs) > 2000
    assert max(len(c["messages"]) for c in convs) >= 6  # real multi-turn dialogues
    for c in convs[:200]:
        validate_conversation(c)
        assert "Human:" not in c["messages"][0]["content"]


def test_gsm8k_annotations_become_tool_calls():
    parts = sources.gsm8k_answer_parts("She sold 48/2 = <<48/2=24>>24 clips, <<3+4=7>>7.\n#### 24")
    assert parts == [{"type": "text", "text": "She sold 48/2 = "}, {"type": "python", "text": "48/2"},
                     {"type": "python_output", "text": "24.0"}, {"type": "text", "text": "24 clips, "},
                     {"type": "python", "text": "3+4"}, {"type": "python_output", "text": "7"},
                     {"type": "text", "text": "7.\n#### 24"}]
    assert sources.gsm8k_answer_parts("a <<2*3=6>>6\n#### 6", tools=False) == "a 6\n#### 6"


def test_arithmetic_value_is_safe():
    assert sources.arithmetic_value("(2+3)*4 - 1/2") == 19.5
    assert sources.arithmetic_value("2**10") == 1024
    assert sources.arithmetic_value("__import__('os').getcwd()") is None
    assert sources.arithmetic_value("1/0") is None and sources.arithmetic_value("9**9**9") is None


def test_gsm8k_output_matches_our_python_tool():
    from chatforge.infer.sandbox import run_python

    for expr in ("48/2", "48+24", "0.2*50", "100-50-30-15", "12/60"):
        out = sources.gsm8k_answer_parts(f"<<{expr}=x>>")[1]["text"]
        assert run_python(expr).as_tool_output().strip() == out


def test_gsm8k_real_file(shared_data):
    convs = list(sources.read_gsm8k(split="test"))
    assert len(convs) == 1319
    calls = wrong = 0
    for c in convs:
        parts = c["messages"][1]["content"]
        text = "".join(p["text"] for p in parts)
        assert "<<" not in text and parts[-1]["text"].rstrip().split("\n")[-1].startswith("####")
        for a, b in zip(parts, parts[1:]):  # every call is followed by its output
            if a["type"] == "python":
                assert b["type"] == "python_output"
                calls += 1
                try:
                    wrong += float(b["text"]) != pytest.approx(eval(a["text"]), rel=1e-3, abs=1e-2)
                except ValueError:  # the data has one '3/4' output
                    wrong += 1
    assert calls > 4000 and wrong <= 2  # the python part computes what the annotation says


def test_alpaca_seed_real_file(shared_data):
    convs = list(sources.read_alpaca_seed())
    assert len(convs) >= 175
    assert all(c["messages"][0]["role"] == "user" for c in convs)


def test_alpaca_seed_small_file(tmp_path):
    p = tmp_path / "seed.jsonl"
    p.write_text(json.dumps({"id": "t1", "name": "x", "instruction": "Sort the list.", "is_classification": False,
                             "instances": [{"input": "3, 1, 2", "output": "1, 2, 3"},
                                           {"input": "", "output": ""}]}) + "\n")
    stats = Counter()
    convs = list(sources.read_alpaca_seed(p, stats=stats))
    assert convs == [{"messages": [{"role": "user", "content": "Sort the list.\n\n3, 1, 2"},
                                   {"role": "assistant", "content": "1, 2, 3"}]}]
    assert stats["skipped: empty assistant message"] == 1


def test_gsm8k_small_file(tmp_path):
    p = tmp_path / "gsm.jsonl"
    p.write_text(json.dumps({"question": "Tom has 3 bags of 4 apples. How many apples?",
                             "answer": "He has 3*4 = <<3*4=12>>12 apples.\n#### 12"}) + "\n")
    (conv,) = sources.read_gsm8k(p)
    assert conv["messages"][0]["content"].startswith("Tom has")
    assert [part["type"] for part in conv["messages"][1]["content"]] == ["text", "python", "python_output", "text"]
    (plain,) = sources.read_gsm8k(p, tools=False)
    assert plain["messages"][1]["content"] == "He has 3*4 = 12 apples.\n#### 12"
