"""The knowledge probe: grading, labels, the SFT set it writes, and a real probe of a tiny model."""

import json

import pytest
import torch

from chatforge.data import factworld as fw
from chatforge.posttrain import knowledge_probe as kp


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    pass


def test_grade():
    assert kp.grade("Dario Zeller was born in 1969.", "1969") == "correct"
    assert kp.grade("He lives in oslo", "Oslo") == "correct"                 # case and punctuation
    assert kp.grade("She works for Bluefield Labs!", "Bluefield Labs") == "correct"
    assert kp.grade("born in 19690", "1969") == "wrong"                       # whole words only
    assert kp.grade("Bluefield", "Bluefield Labs") == "wrong"
    assert kp.grade("I don't know when he was born.", "1969") == "refused"
    assert kp.grade("Sorry, I'm not sure.", "Oslo") == "refused"
    assert kp.grade("I don\u2019t know.", "Oslo") == "refused"  # the typographic apostrophe (was graded wrong)
    assert kp.grade("He was born in 1970.", "1969") == "wrong"
    assert kp.grade("", "1969") == kp.grade(None, "1969") == "wrong"


def test_label():
    assert kp.label(["correct"] * 3 + ["wrong"] * 2) == "known"
    assert kp.label(["correct"] + ["wrong"] * 4) == "partly"
    assert kp.label(["refused", "wrong", "wrong"]) == "unknown"
    assert kp.label(["correct", "wrong"], known_threshold=0.6) == "partly"


def test_a_base_model_is_probed_with_a_cloze_of_the_answer_sentence():
    """Asked "When was X born?", a small base model answers with any fact about X; the probe starts
    the answer for it ("X was born in") so its continuation is about this very fact."""
    q = {"question": "When was Dario Zeller born?", "answer": "1969", "answer_sentence": "Dario Zeller was born in 1969."}
    assert kp.cloze_prefix(q) == "Dario Zeller was born in"
    assert kp.few_shot_prompt(q, []).endswith("Question: When was Dario Zeller born?\nAnswer: Dario Zeller was born in")
    assert kp.cloze_prefix({"question": "2 + 2?", "answer": "4"}) == ""  # a user's QA without sentences
    assert kp.cloze_prefix({"question": "?", "answer": "4", "answer_sentence": "4 it is."}) == ""  # answer first
    assert kp.few_shot_prompt({"question": "2 + 2?", "answer": "4"}, []).endswith("Answer:")


def _probed(people, labels):
    qs = fw.questions(people, "train")
    return [{**q, "label": labels[q["entity"]]} for q in qs]


def test_conversations_follow_the_labels(tiny_tokenizer, tmp_path):
    from chatforge.infer.search import SearchIndex, build_index

    known, unknown, partly = fw.make_world(2, 1, seed=5)
    probed = _probed([known, unknown, partly], {known.name: "known", unknown.name: "unknown", partly.name: "partly"})
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"text": fw.biography(p, __import__("random").Random(0))}) + "\n"
                                                for p in (known, unknown, partly)))
    build_index([tmp_path / "web.jsonl"], tmp_path / "i.sqlite", quiet=True)
    convs = kp.conversations(probed, index=SearchIndex(tmp_path / "i.sqlite"))
    plain = [c for c in convs if c["messages"][0]["role"] == "user"]
    searchy = [c for c in convs if c["messages"][0]["role"] == "system"]
    assert len(plain) == len(searchy) == len(probed)
    for q, c in zip(probed, plain):
        reply = c["messages"][1]["content"]
        want = {"known": "correct", "partly": "correct", "unknown": "refused"}[q["label"]]
        assert kp.grade(reply, q["answer"]) == want, reply
    refusals = {c["messages"][1]["content"] for q, c in zip(probed, plain) if q["label"] == "unknown"}
    assert len(refusals) > 2  # varied words
    for q, c in zip(probed, searchy):
        content = c["messages"][2]["content"]
        if q["label"] == "known":
            assert content == q["answer_sentence"]
        else:  # search, results, then the answer the results support
            assert [p["type"] for p in content] == ["search", "search_output", "text"]
            assert q["answer"] in content[1]["text"] and kp.grade(content[2]["text"], q["answer"]) == "correct"
            ids, mask = tiny_tokenizer.render_conversation(c["messages"])
            out_start = ids.index(tiny_tokenizer.special_id("output_start"))
            out_end = ids.index(tiny_tokenizer.special_id("output_end"))
            assert not any(mask[out_start:out_end + 1]) and mask[out_start - 1] == 1  # results masked, call learned
    # without probing every question is answered confidently
    base = kp.conversations(probed, probing=False)
    assert all(kp.grade(c["messages"][1]["content"], q["answer"]) == "correct" for q, c in zip(probed, base))


def _train_tiny_chat(tok, convs, steps=60):
    """A 2-layer model trained on these conversations (all of them every step) until it recites them."""
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, seq_len=128, n_layer=2, n_head=2, n_kv_head=2, n_embd=64,
                    intermediate_size=192)
    model = GPT(cfg)
    rows = [tok.render_conversation(c["messages"])[0] for c in convs]
    T = max(map(len, rows))
    x = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    y = torch.tensor([r[1:] + [-1] * (T - len(r) + 1) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(x, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


def test_probe_knows_what_the_model_was_trained_on(tiny_tokenizer, tmp_path):
    from chatforge.model.run_dir import save_run

    seen = fw.Person("Dario Zeller", 1931, "Oslo", "Northwind", "botany", seen=True, role="probe")
    unseen = fw.Person("Greta Moreau", 1977, "Lisbon", "Harbor Bank", "music", seen=False, role="probe")
    qa = fw.questions([seen, unseen], "train")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qa))
    # a tiny chat model taught the seen person's facts (and nothing about the other one)
    convs = [{"messages": [{"role": "user", "content": q["question"]},
                           {"role": "assistant", "content": q["answer_sentence"]}]} for q in qa if q["seen"]]
    model, loss = _train_tiny_chat(tiny_tokenizer, convs)
    assert loss < 0.3
    save_run(tmp_path / "run", model, tiny_tokenizer, kind="sft")

    s = kp.probe(tmp_path / "run", tmp_path / "qa.jsonl", tmp_path / "probe", k=4, temperature=0.5)
    labels = {(p["entity"], p["question"]): p["label"] for p in s["probed"]}
    seen_labels = [v for (e, _), v in labels.items() if e == seen.name]
    unseen_labels = [v for (e, _), v in labels.items() if e == unseen.name]
    assert seen_labels.count("known") >= 6, s["probed"]      # of 8 questions
    assert unseen_labels.count("unknown") >= 7, s["probed"]
    assert s["by_seen"]["seen"]["known"] >= 6
    sft = [json.loads(x) for x in (tmp_path / "probe" / "sft.jsonl").read_text().splitlines()]
    assert len(sft) == len(qa)
    by_q = {c["messages"][0]["content"]: c["messages"][1]["content"] for c in sft}
    for p in s["probed"]:
        if p["label"] == "unknown":
            assert kp.grade(by_q[p["question"]], p["answer"]) == "refused"
    assert "known" in (tmp_path / "probe" / "report.md").read_text()
