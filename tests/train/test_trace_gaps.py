"""benchmarks/trace_gaps.py: GPU idle time in a profiler trace, split by cause (late launch or not)."""

import gzip
import importlib.util
import json
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "trace_gaps", Path(__file__).resolve().parents[2] / "benchmarks" / "trace_gaps.py")
trace_gaps = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(trace_gaps)


def _kernel(name, ts, dur, corr):
    return {"cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"correlation": corr}}


def _launch(ts, corr):
    return {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 1, "args": {"correlation": corr}}


def _op(name, ts, dur):
    return {"cat": "cpu_op", "name": name, "ts": ts, "dur": dur}


TRACE = {"traceEvents": [
    _op("forward", 0, 50), _op("aten::mm", 1, 2), _launch(1, 1), _kernel("a", 10, 20, 1),   # a: 10..30
    _launch(5, 2), _kernel("b", 33, 10, 2),              # launched early, starts 3 µs after a: GPU-side gap
    _op("Optimizer.step", 60, 40), _op("aten::lerp", 70, 5), _launch(71, 3),
    _kernel("c", 75, 5, 3),                              # launched at 71 > 43 (b's end): waited for the CPU
    _kernel("d", 77, 10, 4),                             # overlaps c: no gap, overlap counted once
    {"cat": "gpu_memset", "name": "Memset", "ts": 87.5, "dur": 1},  # 0.5 µs gap: below the threshold
    {"cat": "cuda_driver", "name": "cuLaunchKernel", "ts": 95, "dur": 1, "args": {"correlation": 6}},
    _kernel("triton_e", 96.5, 2, 6),                     # a Triton kernel, launched late through the driver API
]}


def test_gaps_split_by_cause_and_busy_time_counts_overlap_once():
    s = trace_gaps.gaps(TRACE)
    assert s["span_us"] == 98.5 - 10
    assert s["busy_us"] == 20 + 10 + (87 - 75) + 1 + 2
    assert abs(s["idle_us"] - (3 + 32 + 0.5 + 8)) < 1e-9
    assert [(g[0], g[1], g[2]) for g in s["gaps"]] == [(3, "gpu", "b"), (32, "cpu", "c"), (8, "cpu", "triton_e")]
    assert s["gaps"][1][3] == "aten::lerp" and s["gaps"][1][4] == "Optimizer.step"
    assert s["gaps"][0][4] == "forward"


def test_report_reads_a_gzipped_trace(tmp_path):
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(TRACE, f)
    text = trace_gaps.report(trace_gaps.gaps(trace_gaps.load_trace(path)))
    assert "waiting for the CPU 0.04 ms" in text and "GPU-side 0.00 ms" in text
    assert "| 32 | cpu | c | aten::lerp |" in text
    assert "Optimizer.step 0.04 ms" in text  # c (32 µs) and triton_e (8 µs) launched inside it
