"""The fact world: deterministic, split the way factuality evaluation needs, mixed in at a share."""

import json

import pytest

from chatforge.common import ChatforgeError
from chatforge.data import factworld as fw
from chatforge.data.build import read_docs


def test_world_is_deterministic_and_seed_dependent():
    assert fw.make_world(8, 8, seed=3) == fw.make_world(8, 8, seed=3)
    assert fw.make_world(8, 8, seed=3) != fw.make_world(8, 8, seed=4)
    docs = lambda: [d.text for d in fw.pretrain_documents(fw.make_world(4, 4), renderings=5, per_doc=2)]
    assert docs() == docs()


def test_world_splits_entities_and_phrasings():
    people = fw.make_world(8, 6, seed=0)
    assert len({p.name for p in people}) == 14
    assert sum(p.seen for p in people) == 8
    for seen in (True, False):  # half of each group is held out for evaluation
        group = [p for p in people if p.seen == seen]
        assert {p.role for p in group} == {"probe", "eval"}
    qa = fw.qa_set(people)
    assert {q["phrasing"] for q in qa if q["role"] == "probe"} == {"train"}
    assert {q["phrasing"] for q in qa if q["role"] == "eval"} == {"eval"}
    train_q = {t for a in fw.QUESTIONS.values() for t in a["train"]}
    assert not train_q & {t for a in fw.QUESTIONS.values() for t in a["eval"]}
    for q in qa:  # the answer is the fact, and the answer sentence states it
        p = next(p for p in people if p.name == q["entity"])
        assert q["answer"] == str(getattr(p, q["attribute"])) and q["answer"] in q["answer_sentence"]


def test_biographies_state_every_fact_in_varied_words():
    p = fw.make_world(1, 0)[0]
    import random
    rng = random.Random(0)
    bios = {fw.biography(p, rng) for _ in range(30)}
    assert len(bios) > 20
    for b in bios:
        assert p.name in b and all(p.fact(a) in b for a in fw.ATTRIBUTES)


def test_write_world_keeps_unseen_people_out_of_pretraining(tmp_path):
    info = fw.write_world(tmp_path, n_seen=4, n_unseen=4, renderings=10, per_doc=3)
    people = info["people"]
    text = " ".join(d.text for d in read_docs(tmp_path / "pretrain" / "docs_00000.jsonl.zst"))
    for p in people:
        assert (p["name"] in text) == p["seen"]
        if p["seen"]:
            assert text.count(p["name"] + " ") >= 10
    web = [json.loads(x) for x in (tmp_path / "web.jsonl").read_text().splitlines()]
    assert sorted(w["entity"] for w in web) == sorted(p["name"] for p in people)
    qa = fw.load_qa(tmp_path / "qa.jsonl")
    assert len(qa) == info["questions"] == 8 * 4 * 2


def test_share_sets_the_fact_worlds_fraction_of_characters():
    people = fw.make_world(6, 2)
    corpus = 1_000_000
    r = fw.renderings_for_share(people, 0.2, corpus)
    chars = sum(len(d.text) + 2 for d in fw.pretrain_documents(people, r))
    assert 0.17 < chars / (chars + corpus) < 0.23
    with pytest.raises(ChatforgeError):
        fw.renderings_for_share(people, 1.5, corpus)


def test_user_qa_file_bad_lines_are_skipped(tmp_path, capsys):
    p = tmp_path / "qa.jsonl"
    p.write_text('{"question": "Capital of France?", "answer": "Paris"}\nnot json\n{"question": "x"}\n'
                 '{"question": "Year?", "answer": 1969}\n')
    qa = fw.load_qa(p)
    assert [q["answer"] for q in qa] == ["Paris", "1969"]
    assert "skipped 2" in capsys.readouterr().out
    p.write_text("nope\n")
    with pytest.raises(ChatforgeError):
        fw.load_qa(p)
