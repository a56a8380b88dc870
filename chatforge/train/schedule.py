"""Learning-rate schedules, as a multiplier of each group's base rate (SFT uses these too).

- "wsd" (warmup-stable-decay, the nanochat/modded-nanogpt default): linear warmup, flat, then a
  linear decay over the last `warmdown` fraction to `final_frac`. Any prefix of the run is a
  usable model, and the decay can be re-run from a stable checkpoint.
- "cosine": linear warmup then half a cosine down to `final_frac`.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, total_steps: int, *, kind: str = "wsd", warmup_steps: int = 0,
                  warmdown: float = 0.2, final_frac: float = 0.0) -> float:
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "cosine":
        span = max(1, total_steps - warmup_steps)
        frac = min(1.0, (step - warmup_steps) / span)
        return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * frac))
    if kind == "wsd":
        decay_steps = round(warmdown * total_steps)
        start = total_steps - decay_steps
        if step < start or decay_steps == 0:
            return 1.0
        frac = (step - start) / decay_steps
        return 1.0 - frac * (1 - final_frac)
    if kind == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {kind!r}: use wsd, cosine or constant")
