"""Training batches from token shards: fixed-length windows, rank-sharded, resumable.

The split is cut into non-overlapping windows of seq_len + 1 tokens (input + shifted target).
Window number g of the run is the g-th window of a seeded permutation per epoch ("random") or
simply the g-th window ("sequential"). A micro step of the whole job takes the next
world_size * batch_size windows and rank r takes its own batch_size of them, so the set of
windows an optimizer step sees depends only on the global batch: 1 process with 2 accumulation
steps sees exactly what 2 processes with 1 step see. The state is one counter (plus the
settings it depends on), saved in checkpoints.
"""

from __future__ import annotations

import numpy as np
import torch

from chatforge.common import ChatforgeError
from chatforge.data.shards import TokenShards


class ShardLoader:
    def __init__(self, shard_dir, split: str, batch_size: int, seq_len: int, *, rank: int = 0,
                 world_size: int = 1, order: str = "random", seed: int = 1337, device="cpu"):
        self.shards = TokenShards(shard_dir, split)
        self.B, self.T, self.rank, self.world = batch_size, seq_len, rank, world_size
        self.order, self.seed, self.device = order, seed, torch.device(device)
        self.n_windows = (len(self.shards) - 1) // seq_len
        if self.n_windows < batch_size * world_size:
            raise ChatforgeError(
                f"'{split}' split has {len(self.shards):,} tokens: too few for {batch_size * world_size} "
                f"windows of {seq_len}; use more data, a smaller --seq-len or a smaller batch")
        if order not in ("random", "sequential"):
            raise ValueError(f"order must be random or sequential, not {order!r}")
        self.counter = 0  # windows consumed by the whole job so far
        self._perm_epoch, self._perm = -1, None

    @property
    def epoch(self) -> float:
        return self.counter / self.n_windows

    def _window(self, g: int) -> int:
        epoch, i = divmod(g, self.n_windows)
        if self.order == "sequential":
            return i
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return int(self._perm[i])

    def next_batch(self):
        """-> (inputs, targets), each [batch_size, seq_len] int64 on the device."""
        first = self.counter + self.rank * self.B
        rows = [self.shards.tokens(self._window(first + j) * self.T, self.T + 1) for j in range(self.B)]
        self.counter += self.world * self.B
        buf = torch.from_numpy(np.stack(rows))
        if self.device.type == "cuda":
            buf = buf.pin_memory().to(self.device, non_blocking=True)
        return buf[:, :-1], buf[:, 1:]

    def state_dict(self) -> dict:
        return {"counter": self.counter, "order": self.order, "seed": self.seed, "seq_len": self.T}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seq_len", self.T) != self.T:
            raise ChatforgeError(f"checkpoint was trained with seq_len {state['seq_len']}, not {self.T}; resume with the same --seq-len")
        self.counter, self.order, self.seed = int(state["counter"]), state["order"], int(state["seed"])
        self._perm_epoch = -1


class RandomTokenLoader:
    """Uniform random tokens (benchmarks: measures the step, not the data)."""

    def __init__(self, vocab_size, batch_size, seq_len, device="cpu", seed=0):
        self.V, self.B, self.T, self.device = vocab_size, batch_size, seq_len, torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.counter = 0

    def next_batch(self):
        buf = torch.randint(0, self.V, (self.B, self.T + 1), device=self.device, generator=self.gen)
        self.counter += self.B
        return buf[:, :-1], buf[:, 1:]

    def state_dict(self):
        return {"counter": self.counter}

    def load_state_dict(self, state):
        self.counter = state["counter"]
