"""The pretraining loop: `train(TrainConfig(...)) -> run_dir` (what `chatforge train` and the speedrun call).

One optimizer step = `grad_accum` micro steps of `device_batch` sequences on every rank, so the
global batch is batch_tokens = grad_accum * device_batch * seq_len * world_size whatever the
hardware. The same code runs on one CPU core, one GPU, and K GPUs under torchrun (DDP or FSDP2).

Order inside a step (kept fixed so that a resumed run repeats the uninterrupted one exactly):
set lr -> micro steps (forward, backward) -> clip -> optimizer steps -> step += 1 -> log ->
eval (every eval_every) -> checkpoint (every save_every, and at the end).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from chatforge.common import ChatforgeError
from chatforge.data.shards import TokenShards
from chatforge.model.fp8 import resolve_mode as resolve_fp8_mode
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.train import distributed as D
from chatforge.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from chatforge.train.evaluate import evaluate_loss, sample_continuations, token_bytes_tensor
from chatforge.train.loader import ShardLoader
from chatforge.train.optim import build_optimizers, muon_momentum, set_lr
from chatforge.train.progress import RunLogger, Throughput, progress_line
from chatforge.train.schedule import lr_multiplier


@dataclass
class TrainConfig:
    data: str                        # token shard directory (chatforge data tokenize)
    out: str                         # run directory
    tokenizer: str | None = None     # tokenizer dir: copied into the run; enables bpb and samples
    val_data: str | None = None      # evaluate on these shards (val split, else train) instead of data's val split
    preset: str = "d12"
    model_overrides: dict = field(default_factory=dict)  # e.g. {"n_kv_head": 2}
    seq_len: int = 2048
    batch_tokens: int | None = None  # global tokens per optimizer step (default 2^19 GPU, 8*seq_len CPU)
    device_batch: int | None = None  # sequences per micro step per rank (default: as many as fit)
    steps: int | None = None         # optimizer steps; else from tokens; else tokens_per_param
    tokens: int | None = None
    tokens_per_param: float = 20.0   # Chinchilla-style budget over non-embedding parameters
    schedule: str = "wsd"            # wsd | cosine | constant
    warmup_steps: int = 0
    warmdown: float = 0.2
    final_lr_frac: float = 0.0
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    scalar_lr: float = 0.02
    weight_decay: float = 0.0
    muon: bool = True
    grad_clip: float = 1.0
    data_order: str = "random"       # random | sequential windows
    seed: int = 1337
    eval_every: int = 250
    eval_tokens: int | None = None   # validation tokens per eval (default 2^20 GPU, 16*seq_len CPU)
    sample_every: int | None = None  # default: with every eval
    save_every: int = 1000
    log_every: int = 10
    compile: bool | None = None      # default: on for CUDA, off for CPU
    device: str | None = None
    dist_mode: str = "ddp"           # ddp | fsdp (FSDP2 fully_shard)
    fp8: str = "auto"                # training matmuls in FP8: auto | off | head | forward | all (Hopper/Ada GPUs only; model/fp8.py)
    ns_kernel: str = "auto"          # Muon's symmetric Newton-Schulz kernel: auto (by matrix size) | on | off
    resume: bool = False
    stop_after: int | None = None    # stop (with a checkpoint) after this step: time-limited jobs, tests
    tensorboard: bool = False
    wandb: str | None = None         # W&B project
    quiet: bool = False


NS_KERNEL_SETTINGS = {"auto": None, "on": True, "off": False}  # --ns-kernel -> Muon(ns_kernel=...)


def resolve_steps(cfg: TrainConfig, n_params: int, batch_tokens: int) -> int:
    if cfg.steps:
        return int(cfg.steps)
    tokens = cfg.tokens or cfg.tokens_per_param * n_params
    return max(1, math.ceil(tokens / batch_tokens))


def auto_device_batch(per_rank_seqs: int, seq_len: int, width: int, device: torch.device,
                      fp8: str = "off") -> int:
    """Largest divisor of per_rank_seqs within a token budget per micro step (sized for 80 GB GPUs).
    FP8 'all' keeps less activation memory: d20 runs 32 x 2048 tokens in one pass at 61.7 GB peak
    (51.3 GB with the preset's GQA; H100), 3% faster than two passes of 16."""
    if device.type != "cuda":
        return per_rank_seqs
    if width <= 768 or (width <= 1280 and fp8 == "all"):
        budget = 65536
    else:
        budget = 32768 if width <= 1280 else 16384
    best = 1
    for b in range(1, per_rank_seqs + 1):
        if per_rank_seqs % b == 0 and b * seq_len <= budget:
            best = b
    return best


def attention_backends(name: str):
    """SDPA kernel preference on CUDA. 'cudnn' (default): cuDNN's fused attention first, which on
    Hopper is faster than the flash-attention-2 kernels PyTorch picks by default; PyTorch falls back
    to the next backend for inputs cuDNN does not take."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
             "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]}
    if name == "default":
        return contextlib.nullcontext
    if name not in order:
        raise ValueError(f"unknown attention backend {name!r}: cudnn, flash or default")
    return lambda: sdpa_kernel(order[name], set_priority=True)


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


class Trainer:
    """Model, optimizers and the step function; `train()` drives it, the benchmark times `step()`."""

    def __init__(self, model: GPT, info: D.DistInfo, *, dist_mode="ddp", compile=None, grad_clip=1.0,
                 optim_kwargs: dict | None = None, attention: str = "cudnn", fp8: str = "off",
                 kernels: bool | None = None):
        self.info, self.raw, self.grad_clip = info, model, grad_clip
        # only GPUs with FP8 tensor cores run it; `auto` picks the mode by width
        model.set_fp8(resolve_fp8_mode(fp8, model.config.n_embd, info.device))
        # our Triton backward kernels: on by default where Triton runs them (GPUs), off on CPU,
        # where their PyTorch twins would only add a custom autograd function
        model.set_kernels(info.device.type == "cuda" if kernels is None else kernels)
        self.attention = attention_backends(attention) if info.device.type == "cuda" else contextlib.nullcontext
        self.dist_mode = dist_mode
        self.model = D.wrap(model, info, dist_mode)
        self.optimizers = build_optimizers(model, **(optim_kwargs or {}))
        self.compile = info.device.type == "cuda" if compile is None else compile
        self.fwd = torch.compile(self.model) if self.compile else self.model
        self.autocast = autocast_for(info.device)

    def _sync_ctx(self, last: bool):
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) and not last:
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def step(self, loader, grad_accum: int, lr_mult: float = 1.0, momentum: float | None = None):
        """One optimizer step; returns (mean loss tensor on device, grad norm tensor) without syncing."""
        set_lr(self.optimizers, lr_mult, momentum)
        loss_sum = torch.zeros((), device=self.info.device)
        for micro in range(grad_accum):
            x, y = loader.next_batch()
            with self._sync_ctx(micro == grad_accum - 1), self.attention():
                with self.autocast():
                    loss = self.fwd(x, targets=y)
                (loss / grad_accum).backward()
            loss_sum += loss.detach()
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.grad_clip)
        else:
            norm = torch.zeros((), device=self.info.device)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        for opt in self.optimizers:
            opt.step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return loss_sum / grad_accum, norm


def train(cfg: TrainConfig) -> Path:
    info = D.setup(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        D.teardown()


def _load_tokenizer(path):
    if path is None:
        return None
    from chatforge.model.run_dir import load_tokenizer

    if not Path(path).is_dir():
        raise ChatforgeError(f"tokenizer directory {path} does not exist; train one with `chatforge tokenizer train`")
    return load_tokenizer(path)


def _val_source(cfg: TrainConfig, vocab: int):
    """(directory, split) to evaluate on, or (None, None): --val-data's val split, else its train
    split (a held-out text tokenized whole); without --val-data, the training data's val split."""
    if not cfg.val_data:
        return (cfg.data, "val") if cfg.data and has_split(cfg.data, "val") else (None, None)
    split = "val" if has_split(cfg.val_data, "val") else "train" if has_split(cfg.val_data, "train") else None
    if split is None:
        raise ChatforgeError(f"--val-data {cfg.val_data} holds no token shards; make them with `chatforge data tokenize`")
    if TokenShards(cfg.val_data, split).vocab_size != vocab:
        raise ChatforgeError(f"--val-data {cfg.val_data} was tokenized with another vocabulary than --data {cfg.data}; "
                             "tokenize both with the same tokenizer")
    return cfg.val_data, split


def _resumed_model_config(out: Path, preset_cfg: GPTConfig, overrides: dict) -> GPTConfig:
    """A run resumes with the architecture it started with, even where a preset's defaults have
    changed since (e.g. GQA from d7 up, seventh session); an override that contradicts it is an error."""
    saved = json.loads((out / "config.json").read_text()).get("model")
    if not saved:
        return preset_cfg
    saved_cfg = GPTConfig.from_dict({**saved, "seq_len": preset_cfg.seq_len})
    for key, value in overrides.items():
        if getattr(saved_cfg, key) != value:
            raise ChatforgeError(f"--resume: {out} was started with {key}={getattr(saved_cfg, key)}, not {value}; "
                                 "drop the option or start a new run in another --out")
    return saved_cfg


def _train(cfg: TrainConfig, info: D.DistInfo) -> Path:
    out = Path(cfg.out)
    say = print if (info.is_main and not cfg.quiet) else (lambda *a, **k: None)
    if cfg.resume and not has_checkpoint(out):
        raise ChatforgeError(f"--resume: {out} has no checkpoint/ to resume from; drop --resume to start fresh")
    if not cfg.resume and has_checkpoint(out):
        raise ChatforgeError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if cfg.ns_kernel not in NS_KERNEL_SETTINGS:
        raise ChatforgeError(f"unknown ns_kernel {cfg.ns_kernel!r}; use {', '.join(NS_KERNEL_SETTINGS)}")
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)

    tok_dir = cfg.tokenizer if cfg.tokenizer else (out / "tokenizer" if (out / "tokenizer").is_dir() else None)
    tokenizer = _load_tokenizer(tok_dir)
    vocab = TokenShards(cfg.data, "train").vocab_size
    if tokenizer is not None and tokenizer.vocab_size != vocab:
        raise ChatforgeError(f"tokenizer has {tokenizer.vocab_size} ids but the shards in {cfg.data} were made with "
                             f"{vocab}; pass the tokenizer the shards were built with")
    model_cfg = GPTConfig.from_preset(cfg.preset, vocab_size=vocab, seq_len=cfg.seq_len, **cfg.model_overrides)
    if cfg.resume:
        model_cfg = _resumed_model_config(out, model_cfg, cfg.model_overrides)
    with torch.device(info.device):
        model = GPT(model_cfg)
    n_params = model.num_params(exclude_embeddings=True)

    batch_tokens = cfg.batch_tokens or (2**19 if info.device.type == "cuda" else 8 * cfg.seq_len)
    seqs = batch_tokens // cfg.seq_len
    if seqs * cfg.seq_len != batch_tokens or seqs % info.world_size:
        raise ChatforgeError(f"--batch-tokens {batch_tokens} must be a multiple of seq_len*world_size "
                             f"({cfg.seq_len}*{info.world_size})")
    per_rank = seqs // info.world_size
    fp8 = resolve_fp8_mode(cfg.fp8, model_cfg.n_embd, info.device)
    device_batch = cfg.device_batch or auto_device_batch(per_rank, cfg.seq_len, model_cfg.n_embd, info.device, fp8)
    if per_rank % device_batch:
        raise ChatforgeError(f"--device-batch {device_batch} must divide the {per_rank} sequences per rank per step")
    grad_accum = per_rank // device_batch
    total_steps = resolve_steps(cfg, n_params, batch_tokens)

    trainer = Trainer(model, info, dist_mode=cfg.dist_mode, compile=cfg.compile, grad_clip=cfg.grad_clip,
                      optim_kwargs=dict(matrix_lr=cfg.matrix_lr, embedding_lr=cfg.embedding_lr,
                                        unembedding_lr=cfg.unembedding_lr, scalar_lr=cfg.scalar_lr,
                                        weight_decay=cfg.weight_decay, use_muon=cfg.muon,
                                        ns_kernel=NS_KERNEL_SETTINGS[cfg.ns_kernel]),
                      fp8=fp8)  # resolved above (auto -> a mode); Trainer's own resolve keeps it
    loader = ShardLoader(cfg.data, "train", device_batch, cfg.seq_len, rank=info.rank, world_size=info.world_size,
                         order=cfg.data_order, seed=cfg.seed, device=info.device)
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    if cfg.resume:
        state = load_checkpoint(out, model, trainer.optimizers)
        loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        step, tokens_seen = state["step"], state.get("tokens_seen", 0)
        elapsed_before = state.get("elapsed_s", 0.0)
        say(f"resumed {out} at step {step}")
    cfg_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    run_config = {"kind": "base", "train": cfg_dict, "total_steps": total_steps, "batch_tokens": batch_tokens}
    logger = RunLogger(out, enabled=info.is_main, tensorboard=cfg.tensorboard, wandb_project=cfg.wandb,
                       config=cfg_dict, resume_step=step if cfg.resume else None)
    token_bytes = token_bytes_tensor(tokenizer, info.device)
    eval_tokens = cfg.eval_tokens or (2**20 if info.device.type == "cuda" else 16 * cfg.seq_len)
    eval_batch = device_batch
    eval_steps = max(1, eval_tokens // (eval_batch * cfg.seq_len * info.world_size))
    val_dir, val_split = _val_source(cfg, vocab)
    has_val = val_split is not None
    if has_val:  # a small val split (a small offline corpus) gets a smaller eval batch, not an error
        val_windows = (len(TokenShards(val_dir, val_split)) - 1) // cfg.seq_len
        eval_batch = min(eval_batch, val_windows // info.world_size)
    sample_every = cfg.sample_every or cfg.eval_every
    fpt = model.flops_per_token(cfg.seq_len)
    say(f"model {cfg.preset}: {model.num_params() / 1e6:.1f}M params ({n_params / 1e6:.1f}M non-embedding), "
        f"{model_cfg.n_layer} layers x {model_cfg.n_embd} wide, {model_cfg.n_head} heads | "
        f"{total_steps} steps x {batch_tokens:,} tokens = {total_steps * batch_tokens / 1e6:.1f}M tokens | "
        f"device batch {device_batch} x {cfg.seq_len}, grad accum {grad_accum}, world {info.world_size} "
        f"({cfg.dist_mode if info.is_distributed else 'single'}), compile {trainer.compile}"
        + ((f", fp8 {model.fp8}" + (" (auto)" if cfg.fp8 == "auto" else "")) if model.fp8 != "off" else ""))

    def run_eval(at_step):
        if not has_val:
            return
        if eval_batch < 1:
            say(f"skipping eval: the val split has fewer than {info.world_size} windows of {cfg.seq_len} tokens")
            return
        vl = ShardLoader(val_dir, val_split, eval_batch, cfg.seq_len, rank=info.rank, world_size=info.world_size,
                         order="sequential", device=info.device)
        steps_here = min(eval_steps, vl.n_windows // (eval_batch * info.world_size))
        res = evaluate_loss(trainer.model, vl, max(1, steps_here), token_bytes, trainer.autocast)
        rec = {"kind": "eval", "step": at_step, **res}
        if tokenizer is not None and ((sample_every and at_step % sample_every == 0) or at_step == total_steps):
            rec["samples"] = sample_continuations(trainer.model, tokenizer, autocast=trainer.autocast)
        logger.log(rec)
        say(f"eval step {at_step}: val loss {res['val_loss']:.4f}" + (f", val bpb {res['val_bpb']:.4f}" if "val_bpb" in res else ""))
        for s in rec.get("samples", []):
            say(f"   > {s!r}")

    if step == 0:
        run_eval(0)
    meter = Throughput(fpt, info.device, info.world_size)
    t_start = time.perf_counter()
    window_tokens, window_steps, last_loss = 0, 0, float("nan")
    while step < total_steps:
        lrm = lr_multiplier(step, total_steps, kind=cfg.schedule, warmup_steps=cfg.warmup_steps,
                            warmdown=cfg.warmdown, final_frac=cfg.final_lr_frac)
        t0 = time.perf_counter()
        loss, norm = trainer.step(loader, grad_accum, lrm, muon_momentum(step) if cfg.muon else None)
        step += 1
        tokens_seen += batch_tokens
        window_tokens += batch_tokens
        window_steps += 1
        if step % cfg.log_every == 0 or step == total_steps or step == 1:
            loss_v = D.all_reduce_mean(loss.detach().clone()).item()  # .item() syncs: time is now honest
            last_loss = loss_v
            tok_s, mfu = meter.update(window_tokens)
            dt = time.perf_counter() - t0
            elapsed = elapsed_before + time.perf_counter() - t_start
            if step > 1:
                eta = (total_steps - step) * (window_tokens / tok_s / window_steps if tok_s else dt)
            else:
                eta = (total_steps - step) * dt
            logger.log({"kind": "train", "step": step, "loss": loss_v, "lr_mult": lrm, "grad_norm": float(norm),
                        "tok_s": tok_s, "mfu": mfu, "tokens": tokens_seen, "elapsed_s": elapsed})
            say(progress_line(step, total_steps, loss_v, lrm, tok_s, mfu, elapsed, eta), flush=True)
            window_tokens, window_steps = 0, 0
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == total_steps):
            run_eval(step)
            meter.reset()  # evals and checkpoints are not training time: restart the tok/s window
            window_tokens, window_steps = 0, 0
        stopping = cfg.stop_after is not None and step >= cfg.stop_after
        if (cfg.save_every and step % cfg.save_every == 0) or step == total_steps or stopping:  # 0: only at the end
            save_checkpoint(out, trainer.model, trainer.optimizers, step=step, loader_state=loader.state_dict(),
                            extra={"tokens_seen": tokens_seen, "elapsed_s": elapsed_before + time.perf_counter() - t_start},
                            tokenizer=tok_dir if tok_dir and Path(tok_dir).resolve() != (out / "tokenizer").resolve() else None,
                            is_main=info.is_main,
                            run_config={**run_config, "tokens_seen": tokens_seen, "loss": last_loss})
            meter.reset()
            window_tokens, window_steps = 0, 0
        if stopping:
            say(f"stopped after step {step} (--stop-after); continue with --resume")
            break
    logger.close()
    return out


def has_split(shard_dir, split) -> bool:
    return any(Path(shard_dir).glob(f"{split}_*.bin"))
