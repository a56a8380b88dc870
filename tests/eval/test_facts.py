"""The facts task: metrics from graded answers, the held-out question split, the report section."""

import json

from chatforge.data import factworld as fw
from chatforge.eval.facts import facts_section, load_eval_questions, summarize


def _row(seen, grade, grade_search=None, searched=False):
    r = {"question": "q", "answer": "a", "seen": seen, "reply": "r", "grade": grade}
    if grade_search:
        r.update({"grade_search": grade_search, "searched": ["x"] if searched else [], "reply_search": "s"})
    return r


def test_metrics():
    rows = [_row(True, "correct", "correct"), _row(True, "wrong", "correct", searched=True),
            _row(True, "correct", "correct"), _row(True, "refused", "refused"),
            _row(False, "refused", "correct", True), _row(False, "wrong", "correct", True),
            _row(False, "refused", "wrong", True), _row(False, "refused", "refused")]
    m = summarize(rows)
    assert m["n"] == 8 and (m["n_seen"], m["n_unseen"]) == (4, 4)
    assert m["acc_seen"] == 0.5 and m["refusal_unseen"] == 0.75
    assert m["confident_wrong"] == 2 / 8                       # wrong and not refused, over all
    assert m["acc_unseen"] == 0 and m["acc_unseen_search"] == 0.5 and m["acc_seen_search"] == 0.75
    assert m["search_rate_unseen"] == 0.75 and m["search_rate_seen"] == 0.25
    assert len(m["answers"]) == 8
    plain = summarize([_row(None, "correct"), _row(None, "wrong")])  # a user's QA file without splits
    assert plain["acc"] == 0.5 and "acc_seen" not in plain and "acc_search" not in plain


def test_only_held_out_questions(tmp_path):
    fw.write_world(tmp_path, 4, 4, renderings=2)
    qs = load_eval_questions(tmp_path / "qa.jsonl")
    assert qs and all(q["role"] == "eval" and q["phrasing"] == "eval" for q in qs)
    assert {q["seen"] for q in qs} == {True, False}
    assert len(load_eval_questions(tmp_path / "qa.jsonl", limit=3)) == 3
    (tmp_path / "mine.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    assert len(load_eval_questions(tmp_path / "mine.jsonl")) == 1   # no roles: all of it


def test_report_section(tmp_path):
    (tmp_path / "eval").mkdir()
    probed = summarize([_row(True, "correct", "correct"), _row(False, "refused", "correct", True)])
    base = summarize([_row(True, "correct", "correct"), _row(False, "wrong", "correct", True)])
    for name, r in (("sft.json", probed), ("facts_noprobe.json", base)):
        (tmp_path / "eval" / name).write_text(json.dumps({"tasks": {"facts": r}}))
    text = facts_section(tmp_path)
    assert "| confident-wrong, all questions (lower is better) | 0.500 | 0.000 |" in text
    assert "Confident-wrong answers: 0.500 -> 0.000 (none left)" in text
    assert "+0.0 points" in text
    assert facts_section(tmp_path / "nothing") == ""
