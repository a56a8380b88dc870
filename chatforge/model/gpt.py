"""The Transformer: a decoder-only GPT whose weights map 1:1 onto Hugging Face LlamaForCausalLM.

Design choices (each one either is Llama, or can be exported to it):
- Parameter names ARE the HF Llama names (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`,
  `...mlp.gate_proj`, `model.norm`, `lm_head`), so export is `save_file(model.state_dict())`.
- Pre-norm RMSNorm, no biases anywhere. The norm gains are fixed at 1 by default (nanochat,
  modded-nanogpt: they add little and their gradient reductions cost ~2% of a step); they are
  still saved as `*.weight` ones so HF loads them. `norm_gains=True` makes them learnable.
- Rotary position embeddings, "rotate-half" layout as in HF Llama (not the interleaved layout).
- Grouped-query attention (`n_kv_head` divides `n_head`; equal means plain multi-head).
- SwiGLU MLP, hidden size 8/3 * width rounded up to a multiple of 128 (same FLOPs as a 4x MLP).
- Attention through `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
- Under autocast the residual stream is bf16, not fp32 (nanochat, modded-nanogpt): the adds and
  norms between matmuls are bandwidth-bound (`low_precision_residual`; +4% tok/s on an H100).
- Untied input/output embeddings by default (trains better; HF supports both).
- Init as nanochat: o_proj and down_proj start at zero (every block starts as the identity),
  lm_head at std 0.001 (near-uniform first logits), embeddings at std 1, the other matrices
  uniform with std 1/sqrt(fan_in).
- Presets by depth (nanochat): width = 64 * depth, head_dim 128 (64 for the CPU sizes d2..d6).
- KV cache for the inference engine: prefill + decode, batch rows at the same position; ragged
  prompts are left-padded and the padding masked out with `attention_mask` (RoPE only sees
  relative positions, so a left-padded row gives the same logits as the unpadded one).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatforge.model.fp8 import MODES as FP8_MODES
from chatforge.model.fp8 import (E4M3_MAX, fp8_forward_linear, fp8_head_cross_entropy, fp8_head_linear, fp8_linear,
                                 matmul_output_bound, rmsnorm_output_scale)
from chatforge.model.rope_kernels import rope_qkv
from chatforge.model.swiglu_kernels import swiglu


@dataclass
class GPTConfig:
    vocab_size: int = 32768
    seq_len: int = 2048          # training context; RoPE tables grow on demand beyond it
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768
    intermediate_size: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    norm_gains: bool = False     # learnable RMSNorm gains (else fixed ones, exported as such)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    PRESETS = ("d2", "d3", "d4", "d5", "d6", "d8", "d12", "d16", "d20", "d26", "d32")

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, seq_len: int = 2048, **overrides) -> "GPTConfig":
        """'dN': N layers, width 64*N; heads of 128 dims (64 for N <= 6, so tiny models get >1 head);
        from d7 up, half as many key/value heads as query heads where the count is even."""
        if not (isinstance(name, str) and name.startswith("d") and name[1:].isdigit()):
            from chatforge.common import ChatforgeError
            raise ChatforgeError(f"unknown model preset {name!r}; use one of {', '.join(cls.PRESETS)} (any dN works)")
        depth = int(name[1:])
        width = 64 * depth
        head_dim = 64 if depth <= 6 else 128
        n_head = max(1, width // head_dim)
        hidden = 128 * math.ceil(width * 8 / 3 / 128)
        # GPU sizes (128-dim heads) share each key/value head between two query heads: on an H100 a
        # d12 step runs 5% faster (d20: 6%), and a d12 run given about the same six minutes reached
        # a lower held-out bpb than multi-head attention (docs/benchmarks.md). Odd head counts keep MHA.
        n_kv_head = n_head // 2 if head_dim == 128 and n_head % 2 == 0 else n_head
        cfg = dict(vocab_size=vocab_size, seq_len=seq_len, n_layer=depth, n_head=n_head,
                   n_kv_head=n_kv_head, n_embd=width, intermediate_size=hidden)
        cfg.update(overrides)
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_hf_llama(self) -> dict:
        """The matching transformers LlamaConfig kwargs."""
        return dict(vocab_size=self.vocab_size, hidden_size=self.n_embd, intermediate_size=self.intermediate_size,
                    num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
                    num_key_value_heads=self.n_kv_head, head_dim=self.head_dim, hidden_act="silu",
                    max_position_embeddings=self.seq_len, rms_norm_eps=self.norm_eps,
                    rope_theta=self.rope_theta, attention_bias=False, mlp_bias=False,
                    tie_word_embeddings=self.tie_embeddings)


def apply_rotary(x, cos, sin):
    """HF Llama's rotate-half RoPE: x [B, T, H, D]; cos/sin [T, 1, D/2], or [B, T, 1, D/2] for
    per-row positions (fp32 tables, cast like HF)."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class KVCache:
    """Keys/values of every layer for `batch_size` rows, up to `max_len` positions.

    All rows advance together (`pos`). For ragged prompts, left-pad and pass `attention_mask`
    (1 = real token, 0 = padding) to the forward call: masked positions are never attended to.
    """

    def __init__(self, n_layer, batch_size, n_kv_head, max_len, head_dim, device, dtype):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.key_mask: torch.Tensor | None = None  # [B, max_len] bool once any padding was given
        self.batch_size, self.max_len, self.pos = batch_size, max_len, 0

    def reset(self):
        self.pos, self.key_mask = 0, None

    def _note_mask(self, attention_mask, T):
        if attention_mask is None and self.key_mask is None:
            return
        if self.key_mask is None:
            self.key_mask = torch.ones(self.batch_size, self.max_len, dtype=torch.bool, device=self.k.device)
        if attention_mask is not None:
            self.key_mask[:, self.pos:self.pos + T] = attention_mask.to(torch.bool)

    def attn_bias(self, T):
        """Boolean mask [B, 1, T, pos+T] (True = attend), or None when plain causal will do."""
        L = self.pos + T
        if self.key_mask is None and (T == 1 or self.pos == 0):
            return None
        q_pos = torch.arange(self.pos, L, device=self.k.device)[:, None]
        allowed = torch.arange(L, device=self.k.device)[None, :] <= q_pos  # [T, L] causal
        allowed = allowed[None, None]
        if self.key_mask is not None:
            allowed = allowed & self.key_mask[:, None, None, :L]
            # a padding query would see no key at all (NaN); let every query see itself
            allowed = allowed | (torch.arange(L, device=self.k.device)[None, :] == q_pos)[None, None]
        return allowed


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, learnable=True):
        super().__init__()
        self.eps, self.learnable = eps, learnable
        if learnable:
            self.weight = nn.Parameter(torch.ones(dim))
        else:
            self.register_buffer("weight", torch.ones(dim))  # saved (HF needs it), never trained

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),), self.weight.to(x.dtype) if self.learnable else None, self.eps)


def linear(x, w, fp8="off", x_scale=None):
    """x @ w.T in a block's FP8 mode (GPT.set_fp8): 'all' = FP8 forward and backward (x_scale None =
    measured per call); 'forward' = FP8 forward with the static x_scale, bf16 backward."""
    if fp8 == "all":
        return fp8_linear(x, w, x_scale)
    if fp8 == "forward" and x_scale is not None:
        return fp8_forward_linear(x, w, x_scale)
    return F.linear(x, w)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.fp8 = "off"  # training matmuls in FP8 (GPT.set_fp8)
        self.fp8_x_scale = rmsnorm_output_scale(cfg.n_embd, cfg.norm_gains)  # x comes out of an RMSNorm
        self.rope_kernel = False  # RoPE's backward as one Triton kernel (GPT.set_kernels)

    def forward(self, x, cos, sin, kv_cache=None, attn_mask=None):
        B, T, _ = x.shape
        fp8 = self.fp8 if self.training else "off"
        if kv_cache is None:
            # training: one matmul for q, k and v (weights keep their HF names, concatenated on the fly)
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            qkv = linear(x, w, fp8, self.fp8_x_scale)
            qkv = qkv.view(B, T, self.n_head + 2 * self.n_kv_head, self.head_dim)
            if self.rope_kernel and cos.dim() == 3:  # the kernel takes one position table for all rows
                q, k, v = rope_qkv(qkv, cos, sin, self.n_head, self.n_kv_head)
            else:
                q, k, v = qkv.split([self.n_head, self.n_kv_head, self.n_kv_head], dim=2)
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        else:
            # decoding: three matmuls, so no step re-writes the weights
            q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)
            k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)
            v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # RoPE ran in the [B, T, H, D] layout the matmul wrote (coalesced); SDPA wants heads first
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        gqa = self.n_kv_head != self.n_head
        if kv_cache is None:
            # attn_mask [B, 1, T, T] (True = attend) for rows packing several sequences, e.g. a
            # preference pair's prompt read once for both replies (posttrain/pairs.py); else causal
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
                                               enable_gqa=gqa)
        else:
            p = kv_cache.pos
            kv_cache.k[self.layer_idx, :, :, p:p + T] = k.to(kv_cache.k.dtype)
            kv_cache.v[self.layer_idx, :, :, p:p + T] = v.to(kv_cache.v.dtype)
            k = kv_cache.k[self.layer_idx, :, :, :p + T].to(q.dtype)
            v = kv_cache.v[self.layer_idx, :, :, :p + T].to(q.dtype)
            if attn_mask is None:
                # prefill from 0 is plain causal; a single new token sees everything cached
                y = F.scaled_dot_product_attention(q, k, v, is_causal=(p == 0 and T > 1), enable_gqa=gqa)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(B, T, -1)
        y_scale = None
        if fp8 != "off" and self.fp8_x_scale is not None:
            # y averages rows of v = x @ Wv.T with attention weights summing to 1, so |y| <= max |v|
            y_scale = matmul_output_bound(self.v_proj.weight, x.size(-1)).max() / E4M3_MAX
        return linear(y, self.o_proj.weight, fp8, y_scale)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)
        self.fp8 = "off"  # training matmuls in FP8 (GPT.set_fp8)
        self.fp8_x_scale = rmsnorm_output_scale(cfg.n_embd, cfg.norm_gains)  # x comes out of an RMSNorm
        self.swiglu_kernel = False  # SwiGLU's backward as one Triton kernel, with --fp8 forward (GPT.set_kernels)

    def forward(self, x):
        fp8 = self.fp8 if self.training else "off"
        if fp8 != "off":
            # FP8: gate and up as one matmul, so their shared input is cast once
            w = torch.cat([self.gate_proj.weight, self.up_proj.weight])
            gate_up = linear(x, w, fp8, self.fp8_x_scale)
            if self.swiglu_kernel and fp8 == "forward":
                # not with `all`: there inductor fuses the gradient's amax into its own SwiGLU backward
                h = swiglu(gate_up)
            else:
                gate, up = gate_up.chunk(2, dim=-1)
                h = F.silu(gate) * up
            h_scale = None
            if self.fp8_x_scale is not None:
                # |silu(g) * u| <= |g| * |u|, each bounded by its weight row (matmul_output_bound)
                width = x.size(-1)
                bound = matmul_output_bound(self.gate_proj.weight, width) * matmul_output_bound(self.up_proj.weight, width)
                h_scale = bound.max() / E4M3_MAX
            return linear(h, self.down_proj.weight, fp8, h_scale)
        # two matmuls: fusing gate+up into one was no faster on an H100 (benchmarks/train_throughput.py)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps, cfg.norm_gains)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps, cfg.norm_gains)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, kv_cache=None, attn_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, attn_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """Holds what HF calls `model.*` (embeddings, layers, final norm), so parameter names match."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps, cfg.norm_gains)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head or config.n_head % config.n_kv_head or config.head_dim % 2:
            raise ValueError(f"inconsistent heads in {config}: n_embd % n_head, n_head % n_kv_head must be 0, head_dim even")
        self.config = config
        self.model = LlamaBody(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.fp8 = "off"  # training matmuls in FP8: off | head | forward | all (set_fp8, model/fp8.py)
        self.low_precision_residual = True  # under autocast the residual stream is bf16 (forward())
        self.fused_head_loss = True  # with FP8: head + cross-entropy as one function (fp8_head_cross_entropy)
        self._rope_len = 0
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self._build_rope(config.seq_len)
        self.reset_parameters()

    def set_fp8(self, mode: str):
        """Training matmuls in FP8 (model/fp8.py): 'head' = the output head; 'forward' = the head and every
        block matmul's forward (backward in bf16); 'all' = the head and every block matmul, forward and
        backward. Only the training loss is affected: eval() and generation stay in full precision."""
        if mode not in FP8_MODES:
            raise ValueError(f"unknown fp8 mode {mode!r}: {', '.join(FP8_MODES)}")
        self.fp8 = mode
        for block in self.model.layers:
            block.self_attn.fp8 = block.mlp.fp8 = mode if mode in ("forward", "all") else "off"

    def set_kernels(self, on: bool):
        """Our Triton kernels for training's backward pass: RoPE + the q/k/v gradient concatenation
        (model/rope_kernels.py) and, with --fp8 forward, SwiGLU (model/swiglu_kernels.py). Same math
        as the PyTorch code they replace (tested); off CUDA their PyTorch twins run. Measured on an
        H100: -2.3 ms of a 114 ms d12 step, -1.2 ms of a 381 ms d20 step (docs/benchmarks.md)."""
        for block in self.model.layers:
            block.self_attn.rope_kernel = block.mlp.swiglu_kernel = on

    # --- init -------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self):
        cfg = self.config
        nn.init.normal_(self.model.embed_tokens.weight, std=1.0 if not cfg.tie_embeddings else 0.02)
        for block in self.model.layers:
            for lin in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj,
                        block.mlp.gate_proj, block.mlp.up_proj):
                # uniform with the std of 1/sqrt(fan_in) (nanochat)
                bound = math.sqrt(3) / math.sqrt(lin.weight.size(1))
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.self_attn.o_proj.weight)
            nn.init.zeros_(block.mlp.down_proj.weight)
            block.input_layernorm.weight.fill_(1.0)
            block.post_attention_layernorm.weight.fill_(1.0)
        self.model.norm.weight.fill_(1.0)
        if not cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=0.001)

    def _build_rope(self, length, device=None):
        cfg = self.config
        device = device or (self.rope_cos.device if self.rope_cos.numel() else None)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim))
        t = torch.arange(length, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)[:, None, :]  # [T, 1, D/2]: HF's cos/sin are this, repeated twice
        self.rope_cos, self.rope_sin = freqs.cos(), freqs.sin()
        self._rope_len = length

    # --- forward ----------------------------------------------------------------------------
    def forward(self, idx, targets=None, kv_cache: KVCache | None = None, attention_mask=None):
        """idx [B, T] -> logits [B, T, V]; with targets [B, T] the mean cross-entropy over targets != -1.

        With `kv_cache`, idx holds the new tokens only (positions cache.pos ...); they attend to the
        cache and are appended. `attention_mask` [B, T] (1 real, 0 padding) needs a cache.
        """
        B, T = idx.shape
        pos = kv_cache.pos if kv_cache is not None else 0
        if pos + T > self._rope_len:
            self._build_rope(max(2 * self._rope_len, pos + T), device=idx.device)
        cos = self.rope_cos[pos:pos + T].to(idx.device)
        sin = self.rope_sin[pos:pos + T].to(idx.device)
        attn_mask = None
        if kv_cache is not None:
            if pos + T > kv_cache.max_len:
                raise ValueError(f"KV cache full: {pos} + {T} tokens > max_len {kv_cache.max_len}")
            kv_cache._note_mask(attention_mask, T)
            attn_mask = kv_cache.attn_bias(T)
        elif attention_mask is not None:
            raise ValueError("attention_mask is only supported together with a kv_cache")
        x = self.model.embed_tokens(idx)
        if self.low_precision_residual and torch.is_autocast_enabled(x.device.type):
            # The residual stream in the autocast dtype (bf16), as nanochat and modded-nanogpt keep it:
            # the adds and norms between matmuls are bandwidth-bound, and fp32 doubles their traffic.
            x = x.to(torch.get_autocast_dtype(x.device.type))
        for block in self.model.layers:
            x = block(x, cos, sin, kv_cache, attn_mask)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.model.norm(x)
        if targets is None:
            return self.lm_head(x)
        if self.fp8 != "off" and self.training:
            if self.fused_head_loss:
                return fp8_head_cross_entropy(x, self.lm_head.weight, targets, self.config.norm_gains)
            logits = fp8_head_linear(x, self.lm_head.weight, self.config.norm_gains)
        else:
            logits = self.lm_head(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def new_kv_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
        p = self.lm_head.weight
        if dtype is None:
            dtype = torch.bfloat16 if p.device.type == "cuda" else p.dtype
        cfg = self.config
        return KVCache(cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim, p.device, dtype)

    # --- accounting -------------------------------------------------------------------------
    def num_params(self, exclude_embeddings=False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6 * matmul params + attention (PaLM appendix B)."""
        cfg = self.config
        T = seq_len or cfg.seq_len
        n = self.num_params() - self.model.embed_tokens.weight.numel() * (0 if cfg.tie_embeddings else 1)
        n -= sum(p.numel() for name, p in self.named_parameters() if p.dim() == 1)
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, stop_id=None):
        """Sample continuations of idx [B, T] with a KV cache; returns [B, T + new] (stops early at stop_id for all rows)."""
        self.eval()
        B, T = idx.shape
        cache = self.new_kv_cache(B, T + max_new_tokens)
        logits = self(idx, kv_cache=cache)[:, -1]
        out = [idx]
        for i in range(max_new_tokens):
            nxt = sample_next(logits.float(), temperature, top_k, top_p, generator)
            out.append(nxt)
            if stop_id is not None and bool((nxt == stop_id).all()):
                break
            if i + 1 < max_new_tokens:
                logits = self(nxt, kv_cache=cache)[:, -1]
        return torch.cat(out, dim=1)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits [B, V] -> next ids [B, 1]. temperature 0 = greedy."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)
