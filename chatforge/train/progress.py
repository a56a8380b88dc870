"""Run logging: log.jsonl records, the one-line progress report, MFU, optional TensorBoard / W&B.

SFT logs through the same RunLogger so every run directory reads the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from chatforge.common import ChatforgeError

# dense bf16 tensor-core peaks (FLOP/s), for MFU
_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12,
              "A10G": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def peak_flops(device) -> float | None:
    """Peak bf16 FLOP/s of a CUDA device, None where unknown (CPU: MFU is not reported)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in _PEAK_BF16.items():
        if key in name:
            return val
    return None


def fmt_duration(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


class RunLogger:
    """Appends JSON records to RUN/log.jsonl (rank 0 only) and mirrors scalars to TB / W&B."""

    def __init__(self, run_dir, *, enabled=True, tensorboard=False, wandb_project=None, config=None,
                 resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what the interrupted run logged after its last checkpoint: those steps are redone
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ChatforgeError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
            self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ChatforgeError("--wandb needs the wandb package: pip install wandb") from e
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(run_dir))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record.get("step", 0)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)
        if self.wandb:
            self.wandb.log({f"{record.get('kind', 'train')}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self):
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


class Throughput:
    """Tokens/s and MFU over a sliding window of steps (the first steps, compiling, are excluded)."""

    def __init__(self, flops_per_token: float, device, world_size: int = 1):
        self.fpt, self.world = flops_per_token, world_size
        self.peak = peak_flops(device)
        self.t0 = time.perf_counter()
        self.tokens = 0
        self.start = time.perf_counter()

    def update(self, tokens: int) -> tuple[float, float | None]:
        now = time.perf_counter()
        dt = now - self.t0
        tok_s = tokens / dt if dt > 0 else 0.0
        self.t0 = now
        mfu = (tok_s * self.fpt / (self.peak * self.world)) if self.peak else None
        return tok_s, mfu

    def reset(self):
        self.t0 = time.perf_counter()


def progress_line(step, total, loss, lr_mult, tok_s, mfu, elapsed, eta_s) -> str:
    mfu_s = f" | MFU {100 * mfu:4.1f}%" if mfu is not None else ""
    return (f"step {step:>6}/{total} | loss {loss:.4f} | lr x{lr_mult:.3f} | {tok_s / 1e3:8.1f}k tok/s{mfu_s}"
            f" | {fmt_duration(elapsed)} elapsed, ETA {fmt_duration(eta_s)}")
