"""The pretraining loop on real (tiny) shards: learning, exact resume, checkpoint/run layout, sampling."""

import json
import math

import pytest
import torch

from chatforge.cli import main
from chatforge.common import ChatforgeError
from chatforge.data.shards import TokenShards
from chatforge.model import load_run
from chatforge.train.trainer import TrainConfig, train

from .conftest import build_shards

TINY = dict(preset="d2", seq_len=64, batch_tokens=512, eval_every=1000, log_every=1, save_every=1000,
            device="cpu", quiet=True)


def losses(run_dir):
    recs = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}


def test_loss_falls_and_run_dir_is_complete(tiny_shards, tiny_tokenizer, tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(data=str(tiny_shards), out=str(out), tokenizer=str(tiny_tokenizer.path),
                      **{**TINY, "eval_every": 15, "quiet": False}, steps=30))
    log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [0, 15, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.5          # from ~ln(512)=6.2
    assert 0 < evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    assert len(evals[-1]["samples"]) == 4 and evals[-1]["samples"][0].startswith("The capital of France is")
    train_recs = [r for r in log if r["kind"] == "train"]
    assert all(r["grad_norm"] > 0 and r["tok_s"] > 0 for r in train_recs)
    assert "tok/s" in capsys.readouterr().out
    model, tok, cfg = load_run(out)
    assert cfg["step"] == 30 and cfg["kind"] == "base" and tok.vocab_size == 512
    assert (out / "checkpoint" / "state.pt").exists()
    # the CLI samples from it
    assert main(["sample", str(out), "ROMEO:", "--n", "2", "--max-tokens", "8", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("ROMEO:") == 2


def test_resume_repeats_the_uninterrupted_run(tiny_shards, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(TrainConfig(data=str(tiny_shards), out=str(full), **TINY, steps=8))
    train(TrainConfig(data=str(tiny_shards), out=str(part), **TINY, steps=8, stop_after=4))
    assert max(losses(part)) == 4
    with pytest.raises(ChatforgeError, match="--resume"):
        train(TrainConfig(data=str(tiny_shards), out=str(part), **TINY, steps=8))
    train(TrainConfig(data=str(tiny_shards), out=str(part), **TINY, steps=8, resume=True))
    a, b = losses(full), losses(part)
    assert sorted(b) == list(range(1, 9))
    assert all(a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-6) for s in a), (a, b)
    wa, _, _ = load_run(full)
    wb, _, _ = load_run(part)
    for (n, p), q in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_resume_keeps_the_architecture_the_run_started_with(tiny_shards, tmp_path):
    """Regression: presets gained GQA from d7 up (seventh session), so resuming an older run built the
    new preset's model and its checkpoint did not load. A run resumes with its saved architecture."""
    run = tmp_path / "run"
    train(TrainConfig(data=str(tiny_shards), out=str(run), **TINY, steps=4, stop_after=2,
                      model_overrides={"n_kv_head": 1}))  # d2's preset default is 2
    with pytest.raises(ChatforgeError, match="n_kv_head=1, not 2"):
        train(TrainConfig(data=str(tiny_shards), out=str(run), **TINY, steps=4, resume=True,
                          model_overrides={"n_kv_head": 2}))
    train(TrainConfig(data=str(tiny_shards), out=str(run), **TINY, steps=4, resume=True))
    assert sorted(losses(run)) == [1, 2, 3, 4]
    model, _, _ = load_run(run)
    assert model.config.n_kv_head == 1


def test_bad_inputs_are_one_line_errors(tiny_shards, tmp_path):
    with pytest.raises(ChatforgeError, match="multiple"):
        train(TrainConfig(data=str(tiny_shards), out=str(tmp_path / "r"), **{**TINY, "batch_tokens": 100}, steps=1))
    with pytest.raises(ChatforgeError, match="no checkpoint"):
        train(TrainConfig(data=str(tiny_shards), out=str(tmp_path / "r2"), **TINY, steps=1, resume=True))
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r3"), "--preset", "d2"]) == 2


def test_small_val_split_evaluates_with_a_smaller_batch(tiny_tokenizer, shared_data, tmp_path):
    # regression: a val split with fewer windows than the device batch stopped the run with an error
    # (seen with an offline d12 run: 49k val tokens < 32 windows of 2048)
    text = (shared_data / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    shards = build_shards(tiny_tokenizer, text, tmp_path / "shards", val_frac=0.02)
    val_tokens = TokenShards(shards, "val")
    cfg = {**TINY, "batch_tokens": 16 * TINY["seq_len"], "eval_every": 1}  # device batch: 16 windows
    assert (len(val_tokens) - 1) // cfg["seq_len"] < 16
    out = tmp_path / "run"
    train(TrainConfig(data=str(shards), out=str(out), **cfg, steps=2))
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and all(math.isfinite(e["val_loss"]) for e in evals)


def test_val_data_evaluates_on_held_out_shards(tiny_shards, tiny_tokenizer, shared_data, tmp_path):
    wiki = (shared_data / "text" / "wikitext-2-test.tokens.txt").read_text(encoding="utf-8")[:40_000]
    held = build_shards(tiny_tokenizer, wiki, tmp_path / "held", val_frac=0)

    def evals(name, **kw):
        train(TrainConfig(data=str(tiny_shards), out=str(tmp_path / name), **{**TINY, "eval_every": 1}, steps=1, **kw))
        recs = [json.loads(ln) for ln in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return [r["val_loss"] for r in recs if r["kind"] == "eval"]

    own = evals("own")
    assert evals("same", val_data=str(tiny_shards)) == own   # a directory with a val split: that split
    other = evals("held", val_data=str(held))                # no val split: its train split, whole
    assert len(other) == 2 and other[0] != own[0] and all(math.isfinite(v) for v in other)
    bad = build_shards(tiny_tokenizer, wiki, tmp_path / "bad", val_frac=0, vocab_size=1024)
    with pytest.raises(ChatforgeError, match="another vocabulary"):
        train(TrainConfig(data=str(tiny_shards), out=str(tmp_path / "r"), **TINY, steps=1, val_data=str(bad)))


def test_fp8_auto_is_the_default_and_resolves_per_device(monkeypatch):
    """`chatforge train` defaults to --fp8 auto: FP8 where FP8 tensor cores exist (forward at d12
    widths), plain precision on CPUs."""
    import chatforge.model.fp8 as F8
    from chatforge.model.gpt import GPT, GPTConfig
    from chatforge.train.distributed import DistInfo
    from chatforge.train.trainer import Trainer

    assert TrainConfig(data="shards", out="run").fp8 == "auto"
    info = DistInfo(device=torch.device("cpu"))
    model = GPT(GPTConfig.from_preset("d2", vocab_size=64, seq_len=16))
    Trainer(model, info, compile=False, fp8="auto")
    assert model.fp8 == "off"
    monkeypatch.setattr(F8, "fp8_supported", lambda device: True)  # as on an H100
    Trainer(model, info, compile=False, fp8="auto")
    assert model.fp8 == "forward" and model.model.layers[0].mlp.fp8 == "forward"


def test_triton_kernels_default_on_gpus_only():
    """Trainer switches our Triton backward kernels on for CUDA devices only; `kernels=` overrides."""
    from chatforge.model.gpt import GPT, GPTConfig
    from chatforge.train.distributed import DistInfo
    from chatforge.train.trainer import Trainer

    def flags(model):
        return {(b.self_attn.rope_kernel, b.mlp.swiglu_kernel) for b in model.model.layers}

    model = GPT(GPTConfig.from_preset("d2", vocab_size=64, seq_len=16))
    Trainer(model, DistInfo(device=torch.device("cpu")), compile=False)
    assert flags(model) == {(False, False)}
    Trainer(model, DistInfo(device=torch.device("cpu")), compile=False, kernels=True)
    assert flags(model) == {(True, True)}


def test_auto_device_batch_fits_the_measured_shapes():
    """Micro batches per rank on a GPU (sized from H100 runs): 32 x 2048 tokens in one pass at d12,
    and at d20 only with FP8 'all' (bf16 activations need two passes of 16); all of it on CPU."""
    from chatforge.train.trainer import auto_device_batch
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert auto_device_batch(32, 2048, 768, gpu) == 32
    assert auto_device_batch(32, 2048, 1280, gpu, "all") == 32
    assert auto_device_batch(32, 2048, 1280, gpu, "forward") == 16
    assert auto_device_batch(32, 2048, 1280, gpu) == 16
    assert auto_device_batch(32, 2048, 1664, gpu, "all") == 8
    assert auto_device_batch(24, 2048, 1280, gpu) == 12  # the largest divisor within budget
    assert auto_device_batch(32, 2048, 1664, cpu) == 32


def test_cli_fp8_choices_are_the_trainer_modes():
    """The CLI spells the modes out (stage CLIs import no torch at start-up): they must stay fp8.TRAIN_MODES."""
    from chatforge.cli import build_parser
    from chatforge.model.fp8 import TRAIN_MODES

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    fp8 = next(a for a in train._actions if a.dest == "fp8")
    assert sorted(fp8.choices) == sorted(TRAIN_MODES) and fp8.default == "auto"


def test_ns_kernel_flag_reaches_muon(tiny_shards, tmp_path, monkeypatch):
    """--ns-kernel auto|on|off becomes Muon(ns_kernel=None|True|False)."""
    import chatforge.train.trainer as T
    from chatforge.cli import build_parser

    args = build_parser().parse_args(["train", "--preset", "d2", "--data", "d", "--out", "o", "--ns-kernel", "off"])
    cfgs = []
    monkeypatch.setattr(T, "train", cfgs.append)
    args.func(args)
    assert cfgs[0].ns_kernel == "off" and T.TrainConfig(data="d", out="o").ns_kernel == "auto"
    monkeypatch.undo()
    seen = []
    real = T.build_optimizers
    monkeypatch.setattr(T, "build_optimizers", lambda *a, **k: seen.append(k["ns_kernel"]) or real(*a, **k))
    for flag in ("auto", "on", "off"):
        train(TrainConfig(data=str(tiny_shards), out=str(tmp_path / flag), **TINY, steps=1, ns_kernel=flag))
    assert seen == [None, True, False]
    with pytest.raises(ChatforgeError, match="unknown ns_kernel 'yes'; use auto, on, off"):
        train(TrainConfig(data=str(tiny_shards), out=str(tmp_path / "bad"), **TINY, steps=1, ns_kernel="yes"))


def test_eval_every_and_save_every_zero_mean_never(tiny_shards, tiny_tokenizer, tmp_path):
    # a bug: --eval-every 0 / --save-every 0 divided by zero (the step-0 eval's sampling, the save check)
    run = tmp_path / "run"
    train(TrainConfig(data=str(tiny_shards), out=str(run), tokenizer=str(tiny_tokenizer.path),
                      **{**TINY, "eval_every": 0, "save_every": 0}, steps=3))
    assert (run / "model.safetensors").is_file()
    assert [r["step"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if r["kind"] == "train"][-1] == 3
