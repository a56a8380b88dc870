"""DPO and Bradley-Terry losses against hand-computed values; our DPO loss and gradients against
TRL's DPOTrainer on the same tiny model and batch; a tiny DPO run that learns held-out pairs."""

import json
import math

import pytest
import torch

from chatforge.posttrain.dpo import DPOConfig, dpo_loss, reply_logps, run_dpo
from chatforge.posttrain.pairs import Pair, PairIds, pair_batch, synthetic_pairs, tokenize_pair
from chatforge.posttrain.reward_model import bradley_terry_loss
from .helpers import assert_same_weights, stop_at_call



@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    yield


softplus = lambda z: math.log1p(math.exp(z))  # noqa: E731  -log sigmoid(-z)


def test_bradley_terry_loss_by_hand():
    rc, rr = torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0.0, 2.0, 3.0])
    want = (softplus(-1.0) + softplus(2.0) + softplus(0.0)) / 3  # -log sigmoid(r_c - r_r), mean
    assert abs(float(bradley_terry_loss(rc, rr)) - want) < 1e-6


def test_dpo_loss_by_hand():
    pi_c, pi_r = torch.tensor([-5.0, -3.0]), torch.tensor([-6.0, -2.0])
    ref_c, ref_r = torch.tensor([-5.5, -3.0]), torch.tensor([-5.5, -2.5])
    beta = 0.5
    # rewards: chosen 0.5*(0.5, 0) = (0.25, 0); rejected 0.5*(-0.5, 0.5) = (-0.25, 0.25); margins (0.5, -0.25)
    loss, rc, rr = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    assert torch.allclose(rc, torch.tensor([0.25, 0.0])) and torch.allclose(rr, torch.tensor([-0.25, 0.25]))
    assert abs(float(loss) - (softplus(-0.5) + softplus(0.25)) / 2) < 1e-6


def test_reply_logps_count_reply_tokens_only():
    from chatforge.model import GPT, GPTConfig

    V = 64
    model = GPT(GPTConfig.from_preset("d2", vocab_size=V, seq_len=32))
    torch.nn.init.zeros_(model.lm_head.weight)  # every next token has probability 1/V
    pairs = [PairIds([1, 2, 3], [4, 5], [6]), PairIds([1], [2, 3, 4, 5], [6, 6, 6])]
    x, y, _ = pair_batch(pairs, pad_id=0, device="cpu")
    got = reply_logps(model, x, y)
    want = torch.tensor([2, 4, 1, 3]) * -math.log(V)  # chosen rows first, then rejected
    assert torch.allclose(got, want.float())
    # and on a real model the head-on-reply-positions path equals the full forward's log-softmax
    model = _tiny_gpt(V, 0)
    full = torch.log_softmax(model(x).float(), -1).gather(-1, y.clamp_min(0)[..., None])[..., 0]
    torch.testing.assert_close(reply_logps(model, x, y), (full * (y != -1)).sum(1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_a_bf16_reference_gives_the_float32_references_log_probs_under_autocast(tied):
    """dpo.frozen_reference(bf16=True), as `chatforge dpo` builds it on a GPU: its matrices held in
    bf16 give bit-identical log-probs under bf16 autocast (here the CPU's), since autocast casts
    each float32 weight to bf16 at use; the weights really are bf16 (the head too, unless tied)."""
    import copy

    from chatforge.model import GPT, GPTConfig
    from chatforge.posttrain.dpo import frozen_reference

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=64, seq_len=64, tie_embeddings=tied))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref = frozen_reference(copy.deepcopy(model), bf16=True)
    assert ref.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16 and not ref.training
    assert ref.lm_head.weight.dtype == (torch.float32 if tied else torch.bfloat16)
    assert ref.model.embed_tokens.weight.dtype == torch.float32 and not any(p.requires_grad for p in ref.parameters())
    pairs = [PairIds([1, 2, 3, 7, 9], [4, 5], [6]), PairIds([1, 8], [2, 3, 4, 5], [6, 6, 6])]
    x, y, _ = pair_batch(pairs, pad_id=0, device="cpu")
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    with torch.no_grad():
        want, got = reply_logps(model.eval(), x, y, autocast), reply_logps(ref, x, y, autocast)
    assert torch.equal(got, want) and torch.isfinite(got).all()


def _tiny_gpt(vocab, seed):
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(seed)
    m = GPT(GPTConfig.from_preset("d2", vocab_size=vocab, seq_len=128))
    with torch.no_grad():  # zero-init projections would leave most gradients zero: perturb them all
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own renames, inside TRL
def test_dpo_loss_and_gradients_equal_trl(tiny_tokenizer, tmp_path):
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    import transformers
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    tok = tiny_tokenizer
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok.path / "tokenizer.json"),
                                                  eos_token="<|assistant_end|>", pad_token="<|bos|>")
    policy, ref = _tiny_gpt(tok.vocab_size, 0), _tiny_gpt(tok.vocab_size, 1)

    def to_hf(m):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**m.config.to_hf_llama()))
        hf.load_state_dict(m.state_dict(), strict=False)
        return hf

    rows = [{"prompt": "The king said", "chosen": " long live the queen", "rejected": " nothing at all"},
            {"prompt": "Tell me of the sea:", "chosen": " it is wide and deep", "rejected": " no"},
            {"prompt": "Why?", "chosen": " because the night is dark", "rejected": " because it is so, my lord"}]
    args = TRLConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=3, report_to=[],
                     use_cpu=True, bf16=False, max_length=None, disable_dropout=True, save_strategy="no")
    trainer = DPOTrainer(model=to_hf(policy), ref_model=to_hf(ref), args=args, processing_class=hf_tok,
                         train_dataset=datasets.Dataset.from_list(rows))
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    batch = trainer.data_collator(examples)
    trainer.model.train()
    theirs = trainer.compute_loss(trainer.model, batch)
    theirs.backward()

    pairs = [PairIds(e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]) for e in examples]
    x, y, _ = pair_batch(pairs, tok.bos_id, "cpu")
    policy.train()
    lp = reply_logps(policy, x, y)
    with torch.no_grad():
        ref_lp = reply_logps(ref, x, y)
    n = len(pairs)
    ours, _, _ = dpo_loss(lp[:n], lp[n:], ref_lp[:n], ref_lp[n:], beta=0.1)
    ours.backward()
    ours, theirs = ours.item(), theirs.item()
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    assert abs(ours - math.log(2)) > 1e-3  # policy != reference: a loss that tests something
    hf_grads = {k: p.grad for k, p in trainer.model.named_parameters() if p.grad is not None}
    checked = 0
    for name, p in policy.named_parameters():
        g = hf_grads[name]
        assert torch.allclose(p.grad, g, atol=1e-4, rtol=1e-3), (name, (p.grad - g).abs().max())
        checked += p.grad.abs().sum() > 0
    assert checked == len(list(policy.parameters()))


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_tiny_dpo_learns_heldout_pairs(tiny_tokenizer, tmp_path, optimizer, monkeypatch):
    from chatforge.model import load_run, save_run
    from chatforge.train.optim import Muon

    muon_steps = []
    monkeypatch.setattr(Muon, "step", lambda self, *a, _step=Muon.step: muon_steps.append(1) or _step(self, *a))

    tok = tiny_tokenizer
    base = save_run(tmp_path / "sft", _tiny_gpt(tok.vocab_size, 0), tok, kind="sft", step=0)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                             for p in synthetic_pairs(240, seed=0)))
    out = run_dpo(DPOConfig(base=str(base), pairs=str(pairs), out=str(tmp_path / "dpo"), steps=30, batch_size=8,
                            lr_frac=0.05, val_frac=0.15, eval_every=0, device="cpu", optimizer=optimizer),
                  log=lambda *a: None)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dpo"]["optimizer"] == optimizer and (len(muon_steps) == 30) == (optimizer == "muon")
    before, after = cfg["val_before"], cfg["val_after"]
    assert before["val_margin"] == 0.0 and abs(before["val_loss"] - math.log(2)) < 1e-5  # policy == reference
    assert after["val_accuracy"] > 0.8 and after["val_margin"] > 0 and after["val_loss"] < math.log(2)
    assert after["val_logp_accuracy"] > before["val_logp_accuracy"]
    from chatforge.posttrain.dpo import dpo_report_section
    section = dpo_report_section(tmp_path)  # the speedrun's report reads DIR/dpo/config.json
    assert f"{100 * after['val_accuracy']:.1f}%" in section and "240 read" in section
    model, _, _ = load_run(out)  # a DPO run is a chat run: every stage that loads runs loads it
    assert cfg["kind"] == "dpo" and model.config == load_run(base)[0].config


def test_online_reference_equals_precomputed(tiny_tokenizer, tmp_path):
    from chatforge.model import save_run
    from safetensors.torch import load_file

    tok = tiny_tokenizer
    base = save_run(tmp_path / "sft", _tiny_gpt(tok.vocab_size, 0), tok, kind="sft", step=0)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                             for p in synthetic_pairs(40, seed=1)))
    runs = [run_dpo(DPOConfig(base=str(base), pairs=str(pairs), out=str(tmp_path / ref), ref=ref, steps=3,
                              batch_size=8, eval_every=0, device="cpu"), log=lambda *a: None)
            for ref in ("precompute", "online")]
    a, b = (load_file(str(r / "model.safetensors")) for r in runs)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert tokenize_pair(tok, Pair([{"role": "user", "content": "x"}], "a", "b")).prompt[-1] == \
        tok.special_id("<|assistant_start|>")


def test_speedrun_plans_dpo_after_sft(tmp_path):
    from chatforge.pipeline.presets import get_preset
    from chatforge.pipeline.speedrun import plan

    for preset, heldout, pairs in (("cpu-tiny", None, "hh-rlhf"), ("smoke", None, "synthetic"),
                                   ("cpu-tiny", str(tmp_path / "held.txt"), "synthetic")):
        stages = plan(get_preset(preset), tmp_path, ["in.txt"], "cpu", heldout)
        names = [s.name for s in stages]
        dpo = stages[names.index("dpo")]
        assert names.index("dpo") > names.index("sft")
        assert dpo.argv[dpo.argv.index("--base") + 1] == str(tmp_path / "sft")
        assert dpo.argv[dpo.argv.index("--pairs") + 1] == pairs and dpo.resume_flag == "--resume"


def test_dpo_resume_continues_exactly(tiny_tokenizer, tmp_path, monkeypatch):
    from chatforge.model import save_run
    from chatforge.posttrain import sft as sft_mod

    tok = tiny_tokenizer
    base = save_run(tmp_path / "sft", _tiny_gpt(tok.vocab_size, 0), tok, kind="sft", step=0)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                             for p in synthetic_pairs(40, seed=2)))
    run = lambda out, **kw: run_dpo(DPOConfig(base=str(base), pairs=str(pairs), out=str(tmp_path / out), steps=6,  # noqa: E731
                                              batch_size=4, eval_every=0, device="cpu", **kw), log=lambda *a: None)
    full = run("full")
    # the loop asks for each step's pairs once: dies at step 5
    stop_at_call(monkeypatch, sft_mod, "step_rows", 5, lambda: run("cut", save_every=2))
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["step"] == 4
    run("cut", save_every=2, resume=True)
    assert_same_weights(full, tmp_path / "cut")
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["val_before"]["val_loss"] == \
        json.loads((full / "config.json").read_text())["val_before"]["val_loss"]
