"""Decoders: the part of the engine that owns the KV cache and turns tokens into next-token logits.

`StaticDecoder` is the fast path for chatforge's GPT. Decode is memory-bound: at batch 1 each step
reads every weight once, so anything beyond that read is waste. It therefore:
- runs q/k/v as one matmul and gate/up as one, over concatenated copies of the GPT's weights made
  once and re-made only when a weight changed in place (an optimizer step between generations, as
  in RL), so every step reads each weight once and launches 3 fewer matmuls per layer;
- writes new keys/values with one index_put on the whole cache buffer: torch.compile turns that
  into an in-place scatter, where a write through a per-layer view made it copy the whole cache;
- keeps K/V in preallocated buffers and masks instead of slicing, so every decode step has the
  same shapes and tensor addresses: on CUDA the step is captured once per (batch, length bucket)
  as a CUDA graph and replayed (one launch instead of hundreds per token);
- attends over the cache only up to the current length bucket (multiples of 256 positions), and
  pads a decode step's rows to a power of two, which bounds how many graphs (compiles) a server
  with a changing batch needs;
- optionally torch.compile's the step (fuses the small elementwise kernels) before capture.
Rows can be duplicated (n samples of one prompt share its prefill) or dropped (finished rows) in
place, so graph addresses stay valid.

`ModelDecoder` wraps any model with the `model(idx, kv_cache=...)` contract (docs/architecture.md);
tests use it with scripted models.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

BUCKET = 256


def _rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _attend(q, k, v, allowed):
    """Attention of q [B, H, T, D] over k/v [B, Hkv, L, D] where `allowed` [B, 1, T, L].

    One query per row (decode): plain matmuls, cheaper than SDPA's masked path for T == 1 on CPU
    and as good on GPU (the step is bandwidth-bound). Prefill: SDPA."""
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    if T > 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=Hkv != H)
    qg = q.reshape(B, Hkv, H // Hkv, D)                                    # [B, Hkv, G, D]
    att = (qg @ k.transpose(-1, -2)).float() * (D ** -0.5)                 # [B, Hkv, G, L]
    att = att.masked_fill(~allowed.view(B, 1, 1, -1), float("-inf")).softmax(-1)
    return (att.to(v.dtype) @ v).reshape(B, H, 1, D)


def greedy_pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (argmax ids [B], [2, B] float32 rows of (id, its log-prob)): what the engine needs from a
    greedy step, made on the device so that it is one small device->host copy (ids are exact in
    float32 far beyond any vocabulary)."""
    return _picked(logits, logits.argmax(-1))


def sample_pick(logits: torch.Tensor, temperature: float, top_k: int | None = None,
                top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Like greedy_pick, but one sample per row from logits / temperature restricted to the top_k
    most likely tokens and the top_p nucleus; the log-prob is under the unmodified distribution.
    The same draw as the engine's per-row sampler (an exponential race over the candidates), with
    the settings fixed per call, so the whole pick can live inside a captured CUDA graph: a batch
    whose rows share their settings (RL rollouts, evaluation) launches no sampling kernels."""
    V = logits.shape[-1]
    k = min(top_k or V, V)
    p = 1.0 if top_p is None else top_p
    return _picked(logits, draw(logits, max(temperature, 1e-5), k, p, k if (k < V or p < 1.0) else None))


def draw(logits, temperature, top_k, top_p, cut: int | None, noise=None) -> torch.Tensor:
    """One token id per row from softmax(logits / temperature), cut to the row's top_k most likely
    tokens and its top_p nucleus (of the tempered distribution). The settings are numbers (every
    row alike: no tensors made, so it can be captured in a CUDA graph) or [B] tensors (per row);
    temperature > 0. `cut`: None when no row cuts, else the largest top_k (the candidates are then
    the `cut` most likely tokens, sorted: both cuts keep a prefix of them). The draw is an
    exponential race, argmax_i p_i / E_i with E_i ~ Exp(1), which picks i with probability p_i
    (exact like multinomial, and ~5x cheaper on a CPU); `noise(probs)`, when given, returns the
    uniforms U (E = -log U) in place of torch.rand_like (seeded rows draw their own)."""
    col = (lambda v: v[:, None]) if isinstance(temperature, torch.Tensor) else (lambda v: v)
    x = torch.log_softmax(logits.float() / col(temperature), -1)
    idx = None
    if cut is not None:
        x, idx = torch.topk(x, cut, dim=-1)
        probs = x.exp()
        rank = torch.arange(cut, device=x.device)[None, :]
        x = x.masked_fill((rank >= col(top_k)) | (probs.cumsum(-1) - probs > col(top_p)), float("-inf"))
    probs = x.softmax(-1)
    u = noise(probs) if noise is not None else torch.rand_like(probs)
    drawn = (probs / u.log_().neg_()).argmax(-1)
    return drawn if idx is None else idx.gather(1, drawn[:, None]).squeeze(1)


def _picked(logits, ids):
    lp = torch.log_softmax(logits.float(), -1).gather(1, ids[:, None]).squeeze(1)
    return ids, torch.stack([ids.to(lp.dtype), lp])


def pick_fn(pick):
    """`pick` of StaticDecoder.step -> the function that picks, or None. True / "greedy": argmax;
    ("sample", temperature, top_k, top_p): sample_pick with those settings."""
    if not pick:
        return None
    if pick is True or pick == "greedy":
        return greedy_pick
    _, t, k, p = pick
    return lambda logits: sample_pick(logits, t, k, p)


class ModelDecoder:
    """Generic decoder over the model's own KV cache (rows of a ragged batch left-padded)."""

    def __init__(self, model, batch: int, max_len: int, dtype=None):
        self.model, self.max_len = model, max_len
        self.cache = model.new_kv_cache(batch, max_len, **({"dtype": dtype} if dtype else {}))

    @property
    def pos(self) -> int:
        return self.cache.pos

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(ids, kv_cache=self.cache, attention_mask=mask)[:, -1].float()

    picked = None  # no greedy pick of its own: the engine samples from the logits

    def step(self, tokens: torch.Tensor, pick: bool = False) -> torch.Tensor:
        return self.model(tokens[:, None], kv_cache=self.cache)[:, -1].float()

    def select(self, index: torch.Tensor) -> None:
        c = self.cache
        c.k, c.v = c.k.index_select(1, index), c.v.index_select(1, index)
        if c.key_mask is not None:
            c.key_mask = c.key_mask.index_select(0, index)
        c.batch_size = len(index)


class StaticDecoder:
    def __init__(self, model, batch: int, max_len: int, cuda_graphs: bool = True, compile: bool = False):
        cfg = model.config
        p = model.lm_head.weight
        self.model, self.cfg, self.device = model, cfg, p.device
        self.dtype = p.dtype
        self.max_len = -(-max_len // BUCKET) * BUCKET if (p.device.type == "cuda" or compile) else max_len
        self.rows = batch      # rows in use
        self.pos = 0
        kv_shape = (cfg.n_layer, batch, cfg.n_kv_head, self.max_len, cfg.head_dim)
        self.k = torch.zeros(kv_shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(kv_shape, device=self.device, dtype=self.dtype)
        self.key_ok = torch.ones(batch, self.max_len, dtype=torch.bool, device=self.device)
        # RoPE tables of our own, HF Llama's convention (rotate-half, fp32 angles cast to the
        # activations' dtype), so this file depends on the contract, not the model's buffers
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32,
                                                          device=self.device) / cfg.head_dim))
        freqs = torch.outer(torch.arange(self.max_len, dtype=torch.float32, device=self.device), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)                                 # [max_len, D]
        self.cos, self.sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        # per layer: (norm, [q;k;v], o, norm, [gate;up], down); the fused matrices are our copies
        self._sources = [((b.self_attn.q_proj.weight, b.self_attn.k_proj.weight, b.self_attn.v_proj.weight),
                          (b.mlp.gate_proj.weight, b.mlp.up_proj.weight)) for b in model.model.layers]
        self.layers = [(b.input_layernorm.weight, torch.cat(qkv), b.self_attn.o_proj.weight,
                        b.post_attention_layernorm.weight, torch.cat(gu), b.mlp.down_proj.weight)
                       for b, (qkv, gu) in zip(model.model.layers, self._sources)]
        self._versions = self._weight_versions()
        self.layer_ids = torch.arange(cfg.n_layer, device=self.device).view(-1, 1, 1)  # KV writes index layers
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        # fixed shapes (graphs, compile) need the attended length in 256-position buckets
        self.bucketed = self.device.type == "cuda" or compile
        self.pad_rows = self.bucketed  # ... and decode steps padded to a power-of-two batch
        self._step_fn = self._forward
        if compile:
            # one compiled graph per (batch size, length bucket), across decoders: lift dynamo's
            # default cap of 8, past which it silently falls back to eager
            from torch._dynamo import config as dynamo_config
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
            self._step_fn = torch.compile(self._forward, dynamic=False, fullgraph=True)
        self.graphs: dict[tuple[int, int], tuple] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None  # graphs share memory
        self.pos_t = torch.zeros((), dtype=torch.long, device=self.device)
        self.picked = None  # (ids, [2, B] id/log-prob) of the last step when it was asked to pick

    # -- the forward pass over [B, T] new tokens at positions pos .. pos+T-1 ------------------------
    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, length: int, row0: int = 0,
                 causal: bool = False) -> torch.Tensor:
        """Rows row0 .. row0+B of the cache take tokens `ids` [B, T] at positions pos .. pos+T-1.

        causal=True: a prefill from position 0 without padding, where plain causal attention over
        the T new keys is exact (SDPA's fast causal kernels, no mask tensor)."""
        cfg = self.cfg
        B, T = ids.shape
        rows = slice(row0, row0 + B)
        H, Hkv, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.norm_eps
        q_pos = pos + torch.arange(T, device=ids.device)                       # [T]
        cos, sin = self.cos[q_pos], self.sin[q_pos]                            # [T, D]
        keys = torch.arange(length, device=ids.device)
        allowed = (keys[None, :] <= q_pos[:, None])[None] & self.key_ok[rows, None, :length]  # [B, T, L]
        allowed = (allowed | (keys[None, :] == q_pos[:, None])[None])[:, None]               # [B, 1, T, L]
        row_ids = torch.arange(row0, row0 + B, device=ids.device)[:, None]        # [B, 1]
        x = F.embedding(ids, self.model.model.embed_tokens.weight)
        for i, (n1, wqkv, wo, n2, wgu, wd) in enumerate(self.layers):
            h = F.rms_norm(x, (x.size(-1),), n1, eps)
            qkv = F.linear(h, wqkv).view(B, T, H + 2 * Hkv, D)
            qk = _rotate(qkv[:, :, :H + Hkv], cos[:, None], sin[:, None])     # RoPE on q and k at once
            q, k, v = qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + Hkv:]          # [B, T, heads, D]
            # cache[layer, row, :, position] = [B, T, Hkv, D]: one scatter into the base buffer
            at = (self.layer_ids[i], row_ids, slice(None), q_pos[None])
            self.k[at], self.v[at] = k, v
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]
            if causal:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hkv != H)
            else:
                y = _attend(q, self.k[i, rows, :, :length], self.v[i, rows, :, :length], allowed)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, H * D), wo)
            h = F.rms_norm(x, (x.size(-1),), n2, eps)
            gate, up = F.linear(h, wgu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, wd)
        x = F.rms_norm(x, (x.size(-1),), self.model.model.norm.weight, eps)
        return self.model.lm_head(x[:, -1]).float()  # the module, so hooks on it apply here too

    def _length(self, upto: int) -> int:
        if not self.bucketed:  # eager CPU: attend to exactly what is there
            return upto
        return min(self.max_len, -(-upto // BUCKET) * BUCKET)

    def _weight_versions(self):
        """In-place modification counters of the source weights; None for weights made under
        torch.inference_mode, which have none (then every prefill re-copies them: one pass over
        the block weights)."""
        weights = [p for pair in self._sources for group in pair for p in group]
        if any(p.is_inference() for p in weights):
            return None
        return [p._version for p in weights]

    def _refresh_weights(self):
        """Re-copy the fused matrices in place (captured graphs keep their addresses) if any source
        weight was modified in place since they were made."""
        versions = self._weight_versions()
        if versions is not None and versions == self._versions:
            return
        for (_, wqkv, _, _, wgu, _), (qkv, gu) in zip(self.layers, self._sources):
            torch.cat(qkv, out=wqkv)
            torch.cat(gu, out=wgu)
        self._versions = versions

    # -- engine interface -------------------------------------------------------------------------
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        self._refresh_weights()
        B, T = ids.shape
        self.rows = B
        self.key_ok[:B] = True  # the decoder is reused across batches
        if mask is not None:
            self.key_ok[:B, :T] = mask.to(torch.bool)
        self.pos_t.fill_(0)
        logits = self._forward(ids, self.pos_t, self._length(T), causal=mask is None)
        self.pos = T
        return logits

    def join(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """New rows after the current ones: prompts `ids` [m, L] (left-padded, `mask`) placed at
        positions pos-L .. pos-1, so they continue in step with the batch. -> their logits [m, V]."""
        m, L = ids.shape
        r0 = self.rows
        if r0 + m > self.k.shape[1] or L > self.pos:
            raise ValueError(f"cannot join {m} rows of {L} tokens at position {self.pos} with {r0} rows in use")
        start = self.pos - L
        self.key_ok[r0:r0 + m] = True
        self.key_ok[r0:r0 + m, :start] = False       # nothing before the prompt
        self.key_ok[r0:r0 + m, start:self.pos] = mask.to(torch.bool)
        pos = torch.full((), start, dtype=torch.long, device=self.device)
        logits = self._forward(ids, pos, self._length(self.pos), row0=r0)
        self.rows = r0 + m
        return logits

    def step(self, tokens: torch.Tensor, pick=False) -> torch.Tensor:
        """Logits [B, V] for one new token per row. pick=True (an all-greedy batch) also leaves the
        argmax and its log-prob in `self.picked`, computed inside the CUDA graph: no sampling
        kernels to launch from the host per token. pick=("sample", temperature, top_k, top_p)
        (rows that share those settings) leaves a sample there instead (`sample_pick`)."""
        B = self.rows
        # fixed shapes: decode a power-of-two number of rows (the spare ones are free rows, their
        # output dropped), so a server whose batch moves between 1 and 32 needs 6 graphs/compiles
        # per length bucket instead of 32
        Bp = min(1 << (B - 1).bit_length(), self.k.shape[1]) if self.pad_rows else B
        length = self._length(self.pos + 1)
        tokens = tokens.to(self.device, non_blocking=True).view(B, 1)
        if Bp > B:
            tokens = torch.cat([tokens, tokens.new_zeros(Bp - B, 1)])
        self.pos_t.fill_(self.pos)
        if not self.use_graphs:
            logits = self._run_step(tokens, length)
            picked = pick_fn(pick)(logits) if pick else None
        else:
            g = self.graphs.get((Bp, length, pick))
            if g is None:
                g = self.graphs[(Bp, length, pick)] = self._capture(Bp, length, pick)
            graph, static_in, static_out, picked = g
            static_in.copy_(tokens)
            graph.replay()
            logits = static_out
        if Bp > B:
            logits = logits[:B]
            picked = (picked[0][:B], picked[1][:, :B]) if picked is not None else None
        self.picked = picked
        self.pos += 1
        return logits

    def _run_step(self, tokens, length):
        try:
            return self._step_fn(tokens, self.pos_t, length)
        except Exception as e:  # torch.compile failing on some setup must not take decoding down
            if self._step_fn is self._forward:
                raise
            warnings.warn(f"torch.compile of the decode step failed ({type(e).__name__}: {e}); decoding eagerly")
            self._step_fn = self._forward
            return self._forward(tokens, self.pos_t, length)

    def _capture(self, B: int, length: int, pick=False):
        static_in = torch.zeros(B, 1, dtype=torch.long, device=self.device)
        picker = pick_fn(pick)
        # the warm-up runs write into the cache at pos: harmless, the real step rewrites that slot
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                out = self._run_step(static_in, length)
                if picker:
                    picker(out)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # random draws inside the graph (sample_pick) advance the default CUDA generator's offset
        # at every replay: each step gets fresh noise
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self._step_fn(static_in, self.pos_t, length)
            static_pick = picker(static_out) if picker else None
        return graph, static_in, static_out, static_pick

    def select(self, index: torch.Tensor) -> None:
        """Rows become rows[index] (duplicates allowed), in place so captured graphs stay valid."""
        n = len(index)
        if n > self.k.shape[1]:
            raise ValueError(f"{n} rows exceed the decoder's {self.k.shape[1]}")
        index = index.to(self.device)
        self.k[:, :n] = self.k.index_select(1, index)
        self.v[:, :n] = self.v.index_select(1, index)
        self.key_ok[:n] = self.key_ok.index_select(0, index)
        self.rows = n
