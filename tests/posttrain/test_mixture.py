"""Mixture specs: validation with clear errors, held-out validation sets, the printed table."""

import json

import pytest

from chatforge.common import ChatforgeError
from chatforge.posttrain.mixture import MIXTURES, build_mixture, format_mixture_table, load_mixture


def _file_mix(tmp_path, n=30):
    p = tmp_path / "mine.jsonl"
    p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                  {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                         for i in range(n)))
    return {"seed": 1, "val_per_set": 5, "sets": [
        {"source": "file", "epochs": 2, "args": {"path": str(p)}},
        {"source": "identity", "examples": 20, "args": {"name": "Zed"}},
    ]}


def test_build_epochs_examples_and_heldout(tmp_path):
    data = build_mixture(_file_mix(tmp_path))
    rows = {r["set"]: r for r in data.rows}
    assert rows["file"]["val"] == 3  # at most 10% of 30
    assert rows["file"]["train"] == 2 * 27 and rows["identity"]["train"] == 20
    assert len(data.train) == 74 and len(data.val) == 8
    val_q = {c["messages"][0]["content"] for c in data.val if c["messages"][0]["content"].startswith("q")}
    train_q = {c["messages"][0]["content"] for c in data.train}
    assert len(val_q) == 3 and not (val_q & train_q)  # held out means never trained on
    table = format_mixture_table(data)
    assert "file" in table and "identity" in table and "total" in table
    again = build_mixture(_file_mix(tmp_path))
    assert again.train == data.train and again.val == data.val  # deterministic by seed


@pytest.mark.parametrize("spec, msg", [
    ({"sets": []}, "non-empty 'sets'"),
    ({"sets": [{"source": "nope", "examples": 1}]}, "unknown source 'nope'"),
    ({"sets": [{"source": "gsm8k"}]}, "exactly one of 'examples'"),
    ({"sets": [{"source": "gsm8k", "examples": 5, "epochs": 1}]}, "exactly one of 'examples'"),
    ({"sets": [{"source": "gsm8k", "examples": -1}]}, "'examples' must be an integer"),
    ({"sets": [{"source": "identity", "epochs": 1}]}, "generated set has no fixed size"),
    ({"sets": [{"source": "identity", "examples": 1, "args": {"nam": "x"}}]}, "unknown args"),
    ({"sets": [{"source": "file", "examples": 1}]}, "needs args.path"),
    ({"sets": [{"source": "gsm8k", "examples": 1}], "sed": 1}, "unknown keys"),
    ({"sets": [{"source": "gsm8k", "examples": 1}, {"source": "gsm8k", "epochs": 1}]}, "two sets named"),
])
def test_validation_errors(spec, msg):
    with pytest.raises(ChatforgeError, match=msg):
        load_mixture(spec)


def test_load_by_name_json_and_py(tmp_path):
    for name in MIXTURES:
        assert load_mixture(name)["name"] == name
    (tmp_path / "m.json").write_text(json.dumps({"sets": [{"source": "dont_know", "examples": 3}]}))
    assert load_mixture(str(tmp_path / "m.json"))["name"] == "m"
    (tmp_path / "m.py").write_text("MIXTURE = {'seed': 2, 'sets': [{'source': 'identity', 'examples': 4}]}\n")
    assert load_mixture(str(tmp_path / "m.py"))["seed"] == 2
    with pytest.raises(ChatforgeError, match="neither a built-in"):
        load_mixture("no-such-mixture")


def test_default_mixture_builds_on_real_data(shared_data):
    data = build_mixture(load_mixture("tiny"))
    assert {r["set"] for r in data.rows} >= {"t0", "hh_rlhf", "gsm8k", "alpaca_seed", "identity", "dont_know"}
    assert len(data.train) == sum(r["train"] for r in data.rows) > 2000


def test_without_shared_data_errors_are_clear(monkeypatch, capsys):
    from chatforge.cli import main
    from chatforge.posttrain import sources

    monkeypatch.setattr(sources, "shared_data_dir", lambda: None)
    with pytest.raises(ChatforgeError, match="shared/data is absent"):
        build_mixture(load_mixture("tiny"))
    assert len(build_mixture(load_mixture("synthetic")).train) == 300  # generated sets need no data
    assert main(["sft", "--list-mixtures"]) == 0
    out = capsys.readouterr().out
    assert "not built: ../shared/data is absent" in out and "identity" in out
