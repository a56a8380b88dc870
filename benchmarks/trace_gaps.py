"""Where does the GPU wait? Idle time between kernels in a PyTorch profiler trace, and its cause.

    python benchmarks/trace_gaps.py TRACE.json[.gz] [--top 12]

A step's kernel times can sum to less than the step: the rest is the GPU idle between kernels.
For each gap this reports whether the next kernel was launched late (the GPU waited for the CPU:
Python, guards, launch overhead) or launched in time (the kernel only started late: dependency
and launch latency on the GPU side), and the host op that was running when it was launched.
`train_throughput.py --trace DIR` writes such a trace of one training step and prints this report.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")  # Triton kernels launch through the driver API (cuLaunchKernel)


def load_trace(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def _enclosing(ops, t):
    """(innermost, outermost) host op (cpu_op / user annotation) whose span contains time t."""
    around = sorted((end - ts, name) for ts, end, name in ops if ts <= t <= end)
    return (around[0][1], around[-1][1]) if around else ("-", "-")


def gaps(trace: dict, min_gap_us: float = 2.0):
    """Summary dict: span, busy and idle µs of the GPU, and every gap >= min_gap_us as
    (gap_us, cause, next_kernel, host_op, top_op), cause = 'cpu' (launched after the GPU went idle)
    or 'gpu' (launched earlier)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATS and "dur" in e), key=lambda e: e["ts"])
    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in LAUNCH_CATS and "correlation" in e.get("args", {})}
    ops = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
           if e.get("cat") in ("cpu_op", "user_annotation") and "dur" in e]
    if not gpu:
        return dict(span_us=0.0, busy_us=0.0, idle_us=0.0, gaps=[])
    busy, gap_list = 0.0, []
    end = gpu[0]["ts"]
    for e in gpu:
        start = e["ts"]
        if start - end >= min_gap_us:
            launched = launches.get(e.get("args", {}).get("correlation"))
            cause = "cpu" if launched is not None and launched > end else "gpu"
            where = launched if launched is not None else start
            gap_list.append((start - end, cause, e["name"], *_enclosing(ops, where)))
        busy += max(0.0, e["ts"] + e["dur"] - max(start, end))  # overlapping kernels count once
        end = max(end, e["ts"] + e["dur"])
    span = end - gpu[0]["ts"]
    return dict(span_us=span, busy_us=busy, idle_us=span - busy, gaps=gap_list)


def report(summary: dict, top: int = 12) -> str:
    g = summary["gaps"]
    by_cause = defaultdict(float)
    by_top = defaultdict(float)
    for us, cause, _, _, top_op in g:
        by_cause[cause] += us
        by_top[top_op] += us
    lines = [f"GPU span {summary['span_us'] / 1e3:.2f} ms, busy {summary['busy_us'] / 1e3:.2f} ms, "
             f"idle {summary['idle_us'] / 1e3:.2f} ms in {len(g)} gaps "
             f"(waiting for the CPU {by_cause['cpu'] / 1e3:.2f} ms, GPU-side {by_cause['gpu'] / 1e3:.2f} ms)"]
    lines.append("idle by outermost host op: " + ", ".join(
        f"{name} {us / 1e3:.2f} ms" for name, us in sorted(by_top.items(), key=lambda kv: -kv[1])[:6]))
    lines.append("| gap µs | cause | next kernel | host op at launch |\n|---|---|---|---|")
    for us, cause, name, op, _ in sorted(g, key=lambda x: -x[0])[:top]:
        lines.append(f"| {us:.0f} | {cause} | {name[:60]} | {op[:50]} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    print(report(gaps(load_trace(args.trace)), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
