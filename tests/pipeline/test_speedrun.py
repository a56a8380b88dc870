import json
import sys

import pytest

from chatforge.common import ChatforgeError
from chatforge.pipeline import speedrun as sr
from chatforge.pipeline.presets import get_preset


class FakeStage(sr.Stage):
    """Runs a tiny python command that makes the stage's output (or fails), instead of chatforge."""

    def exec_argv(self, resume=False):
        code = (f"import pathlib, sys; p = pathlib.Path({str(self.output)!r}); "
                f"p.parent.mkdir(parents=True, exist_ok=True); "
                f"log = p.parent.parent / 'calls.txt'; log.open('a').write({self.name!r} + ({resume!r} and ' resume' or '') + '\\n'); "
                f"sys.exit(3) if (p.parent.parent / 'fail_{self.name}').exists() else p.write_text('ok')")
        return [sys.executable, "-c", code]


def fake_plan(preset, out, inputs, device, heldout=None):
    return [FakeStage(name, ["fake", name, preset.model, "--out", str(out / name)], out / name / "out.txt",
                      resume_flag="--resume" if name == "pretrain" else None)
            for name in ("data", "tokenizer", "pretrain", "sft")]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setattr(sr, "plan", fake_plan)
    monkeypatch.setattr(sr, "_tokenizer_samples", lambda heldout=None: [])
    return tmp_path / "run"


def calls(out):
    return (out / "calls.txt").read_text().split("\n")[:-1]


def test_runs_all_then_skips_all(fake, capsys):
    preset = get_preset("smoke")
    report = sr.speedrun(preset, fake, inputs=["x.txt"])
    assert report == fake / "report.md" and report.is_file()
    assert calls(fake) == ["data", "tokenizer", "pretrain", "sft"]
    timings = json.loads((fake / "timings.json").read_text())
    assert set(timings["stages"]) == {"data", "tokenizer", "pretrain", "sft"}
    assert all(s["status"] == "ran" for s in timings["stages"].values())
    printed = capsys.readouterr().out
    assert "$ chatforge fake pretrain d2" in printed  # the command a user can rerun by hand

    sr.speedrun(preset, fake, inputs=["x.txt"])
    assert calls(fake) == ["data", "tokenizer", "pretrain", "sft"]  # nothing reran
    assert "done earlier" in capsys.readouterr().out
    assert "## Time and cost per stage" in report.read_text()


def test_killed_run_resumes_at_the_failed_stage(fake):
    preset = get_preset("smoke")
    fake.mkdir(parents=True)
    (fake / "fail_pretrain").write_text("")
    (fake / "pretrain").mkdir()
    (fake / "pretrain" / "checkpoint").mkdir()  # a checkpoint left by the interrupted attempt
    with pytest.raises(ChatforgeError, match="stage pretrain failed"):
        sr.speedrun(preset, fake, inputs=["x.txt"])
    assert calls(fake) == ["data", "tokenizer", "pretrain resume"]
    (fake / "fail_pretrain").unlink()
    sr.speedrun(preset, fake, inputs=["x.txt"])
    assert calls(fake)[3:] == ["pretrain resume", "sft"]  # data and tokenizer were not redone


def test_changed_command_reruns_that_stage_and_everything_after(fake):
    sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"])
    # a different model preset changes the commands of every fake stage: all rerun
    sr.speedrun(get_preset("smoke", model="d3"), fake, inputs=["x.txt"])
    assert calls(fake)[4:] == ["data", "tokenizer", "pretrain", "sft"]
    # an output deleted by hand: that stage and the later ones rerun
    (fake / "pretrain" / "out.txt").unlink()
    sr.speedrun(get_preset("smoke", model="d3"), fake, inputs=["x.txt"])
    assert calls(fake)[8:] == ["pretrain", "sft"]


def test_until_and_dry_run(fake, capsys):
    assert sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"], until="tokenizer") is None
    assert calls(fake) == ["data", "tokenizer"]
    with pytest.raises(ChatforgeError, match="not a stage"):
        sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"], until="nope")
    sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"], dry_run=True)
    assert calls(fake) == ["data", "tokenizer"]


def test_presets_and_real_plan(tmp_path):
    with pytest.raises(ChatforgeError):
        get_preset("nope")
    p = get_preset("gpu-d20")
    stages = sr.plan(p, tmp_path, ["in.txt"], "cuda")
    names = [s.name for s in stages]
    assert names == ["data", "tokenizer", "tokenize", "pretrain", "sft", "eval-base", "eval-sft", "export"]
    pre = stages[names.index("pretrain")]
    assert pre.command().startswith("torchrun --standalone --nproc_per_node=8 -m chatforge train --preset d20")
    assert pre.exec_argv(resume=True)[-1] == "--resume"
    no_facts = get_preset("cpu-tiny", facts_share=0.0)
    tiny = {s.name: s for s in sr.plan(no_facts, tmp_path, ["in.txt"], "cpu")}
    assert tiny["pretrain"].command().startswith("chatforge train --preset")
    assert "--mix default" in tiny["sft"].command() and "--tasks bpb,t0_mc" in tiny["eval-base"].command()
    # without ../shared/data: generated SFT set, bpb on the held-out local text
    local = {s.name: s for s in sr.plan(no_facts, tmp_path, ["in.txt"], "cpu", heldout="/x/heldout.txt")}
    assert "--mix synthetic" in local["sft"].command()
    assert "--tasks bpb " in local["eval-base"].command() and "--bpb-text /x/heldout.txt" in local["eval-sft"].command()


def test_fact_world_stages(tmp_path):
    """cpu-tiny mixes the fact world into pretraining, probes the base model, SFTs with and
    without the probe's set, and evaluates facts on both."""
    stages = sr.plan(get_preset("cpu-tiny"), tmp_path, ["in.txt"], "cpu")
    names = [s.name for s in stages]
    assert names[:5] == ["data", "factworld", "tokenizer", "tokenize", "pretrain"]
    assert names.index("index") < names.index("probe") < names.index("sft") < names.index("sft-noprobe")
    assert names.index("eval-sft") < names.index("eval-facts-noprobe")
    by = {s.name: s for s in stages}
    fw = tmp_path / "factworld"
    assert f"--share 0.2 --docs {tmp_path / 'docs'} --seen 8 --unseen 8" in by["factworld"].command()
    assert f"data tokenize {tmp_path / 'docs'} {fw / 'pretrain'} --tokenizer" in by["tokenize"].command()
    assert f"--mix {tmp_path / 'probe' / 'mix.json'} " in by["sft"].command()
    assert f"--mix {tmp_path / 'probe' / 'mix_confident.json'} " in by["sft-noprobe"].command()
    assert by["sft-noprobe"].output == tmp_path / "sft-noprobe" / "model.safetensors"
    assert by["probe"].command().startswith(f"chatforge probe {tmp_path / 'base'} --questions {fw / 'qa.jsonl'}")
    for ev in ("eval-sft", "eval-facts-noprobe"):
        assert f"--facts {fw / 'qa.jsonl'} --search-index {tmp_path / 'search.sqlite'}" in by[ev].command()
    # without ../shared/data the chat eval's explicit task list gains facts
    local = {s.name: s for s in sr.plan(get_preset("cpu-tiny"), tmp_path, ["in.txt"], "cpu", heldout="/x/h.txt")}
    assert "--tasks bpb,facts " in local["eval-sft"].command()
    assert "factworld" not in [s.name for s in sr.plan(get_preset("smoke"), tmp_path, ["in.txt"], "cpu")]


def test_token_budget_capped_by_epochs_once_the_corpus_is_known(tmp_path):
    p = get_preset("gpu-d12")
    def pretrain_argv():
        return next(s for s in sr.plan(p, tmp_path, ["in"], "cuda") if s.name == "pretrain").argv

    before = pretrain_argv()
    assert before[before.index("--tokens") + 1] == str(p.train_tokens)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "meta.json").write_text(json.dumps({"splits": {"train": {"tokens": 3_000_000}}}))
    after = pretrain_argv()
    assert after[after.index("--tokens") + 1] == str(int(p.max_epochs * 3_000_000))


def test_from_takes_earlier_outputs_as_given(fake):
    # outputs prepared elsewhere (no markers here): --from pretrain uses them and runs the rest
    for name in ("data", "tokenizer"):
        (fake / name).mkdir(parents=True)
        (fake / name / "out.txt").write_text("made elsewhere")
    sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"], start_from="pretrain")
    assert calls(fake) == ["pretrain", "sft"]
    (fake / "tokenizer" / "out.txt").unlink()
    with pytest.raises(ChatforgeError, match="tokenizer stage's output"):
        sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"], start_from="sft")


def test_cli_overrides_reach_the_plan(tmp_path, capsys):
    from chatforge.cli import main

    assert main(["speedrun", "--preset", "gpu-d20", "--nproc", "1", "--train-tokens", "5000000", "--dry-run",
                 "--inputs", "x.txt", "--device", "cuda", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "$ chatforge train --preset d20" in out and "$ torchrun" not in out  # one GPU: no torchrun
    assert "--tokens 5000000" in out


def test_a_moved_run_directory_keeps_its_markers(fake, tmp_path):
    import shutil

    sr.speedrun(get_preset("smoke"), fake, inputs=["x.txt"])
    moved = tmp_path / "moved"
    shutil.copytree(fake, moved)
    (moved / "calls.txt").unlink()
    sr.speedrun(get_preset("smoke"), moved, inputs=["x.txt"])
    assert not (moved / "calls.txt").exists()  # nothing reran
