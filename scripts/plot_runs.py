"""Overlay training runs: one panel per metric, one line per run's log.jsonl.

    python scripts/plot_runs.py --out cmp.png --keys val_bpb,loss [--from-step 100] [--x time] bf16=RUN_A/log.jsonl fp8=RUN_B/log.jsonl

--x time puts training seconds on the x axis (runs of different speed compared at equal time);
an eval point takes the clock of its step's training record.

(chatforge eval report plots one run per panel; this compares runs on the same axes.)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from chatforge.eval.report import read_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=path/to/log.jsonl")
    ap.add_argument("--keys", default="val_bpb,loss", help="metrics, one panel each")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--from-step", type=int, default=0, help="leave out earlier steps (the first drop hides the rest)")
    ap.add_argument("--x", choices=["step", "time"], default="step", help="x axis: optimizer step or training seconds")
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = args.keys.split(",")
    runs = []
    for spec in args.runs:
        label, _, path = spec.rpartition("=")  # the path is after the last "="
        rows = read_log(Path(path))
        clock = {r["step"]: r["elapsed_s"] for r in rows if "elapsed_s" in r}
        clock[0] = clock.get(0, 0.0)
        runs.append((label, rows, clock))
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.4), dpi=80, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, rows, clock in runs:
            pts = sorted((r["step"] if args.x == "step" else clock[max(s for s in clock if s <= r["step"])], r[key])
                         for r in rows if key in r and r.get("step", -1) >= args.from_step)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, marker="o" if len(pts) < 30 else None,
                    markersize=3)
        ax.set_xlabel("step" if args.x == "step" else "training seconds")
        ax.set_title(f"{args.title} {key}".strip(), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = args.out + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
