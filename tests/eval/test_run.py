import json

import pytest
import torch

from chatforge.common import ChatforgeError
from chatforge.eval.run import evaluate, parse_tasks, results_table, write_results

from .helpers import BigramModel, ByteTokenizer


def test_parse_tasks():
    assert parse_tasks(None, "base") == ["bpb", "t0_mc"]
    assert "gsm8k_tools" in parse_tasks(None, "sft")
    assert parse_tasks("bpb, arc", "base") == ["bpb", "arc"]
    with pytest.raises(ChatforgeError):
        parse_tasks("bpb,nope", "base")


def test_evaluate_likelihood_tasks_and_table(tmp_path):
    text = tmp_path / "held.txt"
    text.write_text("one paragraph of text\n\nanother paragraph\n")
    arc = tmp_path / "arc.jsonl"
    arc.write_text('{"question": {"stem": "a?", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]},'
                   ' "answerKey": "A"}\n')
    bundle = (BigramModel(torch.zeros(257, 257)), ByteTokenizer(), {"kind": "base", "step": 7})
    res = evaluate(tmp_path, tasks="bpb,arc", paths={"bpb_text": text, "arc": arc}, quiet=True, model_bundle=bundle)
    assert res["kind"] == "base" and res["step"] == 7
    assert res["tasks"]["bpb"]["bpb"] == pytest.approx(8.0056, abs=1e-3)  # log2(257)
    assert res["tasks"]["arc"]["n"] == 1
    out = write_results(res, tmp_path / "eval.json")
    assert json.loads(out.read_text())["tasks"]["arc"]["chance"] == 0.5
    table = results_table({"base": res, "chat": None})
    assert "| bpb | bpb | " in table and "8.0056" in table
    assert "chance 0.500" in table and "—" in table
    with pytest.raises(ChatforgeError, match="--hellaswag"):
        evaluate(tmp_path, tasks="hellaswag", quiet=True, model_bundle=bundle)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from chatforge.cli import main

    assert main(["eval", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a run directory" in err and err.count("\n") == 1
    assert main(["speedrun", "--preset", "cpu-tiny", "--until", "nope", "--inputs", "x.txt", "--out", str(tmp_path / "r")]) == 2
    assert "not a stage" in capsys.readouterr().err
