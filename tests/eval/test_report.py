import json

from chatforge.eval.report import build_report, plot_curves, read_log, write_report


def _fake_speedrun_dir(d):
    (d / "docs").mkdir(parents=True)
    (d / "docs" / "stats.json").write_text(json.dumps({"steps": [
        {"name": "read", "in": 100, "kept": 100, "dropped": {}, "bytes_in": 5000, "bytes_out": 5000, "seconds": 0.5},
        {"name": "quality", "in": 100, "kept": 70, "dropped": {"gopher_short": 20, "c4_lines": 10},
         "bytes_in": 5000, "bytes_out": 3000, "seconds": 1.25},
    ]}))
    for name, kind in (("base", "base"), ("sft", "sft")):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps({"kind": kind, "step": 20, "model": {
            "n_layer": 2, "n_embd": 128, "seq_len": 256, "vocab_size": 4096}}))
        lines = [json.dumps({"step": s, "loss": 8 - s / 5, "lr": 0.01}) for s in range(0, 21, 2)]
        lines += [json.dumps({"step": 10, "val_loss": 6.1, "val_bpb": 2.2, "samples": ["early text"]}),
                  json.dumps({"step": 20, "val_bpb": 1.9, "samples": ["The capital of France is\nParis"]}),
                  '{"step": 21, "loss": 1.0']  # a line cut off by a kill
        (d / name / "log.jsonl").write_text("\n".join(lines) + "\n")
    (d / "eval").mkdir()
    base = {"kind": "base", "tasks": {"bpb": {"bpb": 1.91, "tokens": 5000},
                                      "t0_mc": {"n": 40, "acc": 0.4, "acc_norm": 0.45, "chance": 0.3, "majority_baseline": 0.6}}}
    chat = {"kind": "sft", "tasks": {
        "bpb": {"bpb": 2.05, "tokens": 5000},
        "t0_mc": {"n": 40, "acc": 0.5, "acc_norm": 0.55, "chance": 0.3, "majority_baseline": 0.6},
        "gsm8k": {"n": 5, "acc": 0.0, "samples": [{"question": "2+2?", "reply": "5", "pred": "5", "gold": "4", "correct": False}]},
        "probes": {"n": 1, "answers": [{"source": "mt-bench/writing", "prompt": "Write a haiku | about rain",
                                        "answer": "Rain falls softly", "reference": ""}]}}}
    (d / "eval" / "base.json").write_text(json.dumps(base))
    (d / "eval" / "sft.json").write_text(json.dumps(chat))
    (d / "timings.json").write_text(json.dumps({
        "preset": "cpu-tiny", "usd_per_hour": 2.0, "cost_note": "test rate", "command": "chatforge speedrun",
        "stages": {"data": {"seconds": 30.0, "status": "done", "command": "chatforge data build x --out y"},
                   "pretrain": {"seconds": 360.0, "status": "done", "command": "chatforge train"}}}))


def test_report_from_fake_logs(tmp_path):
    d = tmp_path / "run"
    _fake_speedrun_dir(d)
    path = write_report(d)
    text = path.read_text()
    # every section is present, numbers come from the files
    for heading in ("## Environment", "## Time and cost per stage", "## Data", "## Tokenizer", "## Training",
                    "## Evaluation", "## Sample conversations"):
        assert heading in text
    assert "| quality | 100 | 70 | gopher_short: 20, c4_lines: 10 |" in text
    assert "6.0 min" in text and "$0.22" in text  # 390 s total at $2/h
    assert "| bpb | bpb | 5000 | 1.9100 | 2.0500 |" in text
    assert "majority 0.600" in text
    assert "| gsm8k | acc | 5 | — | 0.0000 |" in text
    assert "Write a haiku \\| about rain" in text  # pipes escaped inside table cells
    assert "wrong, gold 4" in text
    assert "![loss (nats/token)](loss.png)" in text and "![bits per byte](bpb.png)" in text
    png = (d / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (d / "bpb.png").stat().st_size > 1000
    assert "git commit" in text and "torch" in text
    assert "_no tokenizer directory_" in text
    assert "sampled by the trainer at step 20" in text and "- The capital of France is Paris" in text
    assert "early text" not in text


def test_report_compares_with_another_runs_results(tmp_path):
    d = tmp_path / "run"
    _fake_speedrun_dir(d)
    other = tmp_path / "cpu-tiny-evals"
    other.mkdir()
    (other / "base.json").write_text(json.dumps({"tasks": {"bpb": {"bpb": 3.25, "tokens": 5000}}}))
    text = build_report(d, compare={"cpu-tiny": other})
    assert "| task | metric | n | base | chat (sft) | cpu-tiny base | cpu-tiny chat |" in text
    assert "| bpb | bpb | 5000 | 1.9100 | 2.0500 | 3.2500 | — |" in text


def test_report_with_nothing_yet(tmp_path):
    text = build_report(tmp_path)
    assert "_no evaluation results_" in text and "_no stage timings recorded_" in text
    assert "_no data stats" in text


def test_read_log_and_plot_skip_bad_lines(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 2, "loss": 1.5}\n')
    assert [r["step"] for r in read_log(p)] == [1, 2]
    assert plot_curves({"base": read_log(p)}, tmp_path / "x.png", ("loss",), "t")
    assert not plot_curves({"base": read_log(p)}, tmp_path / "y.png", ("bpb",), "t")
