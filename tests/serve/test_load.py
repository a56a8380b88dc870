"""The load test (benchmarks/serve_load.py) as a slow test: 64 concurrent streaming clients and 64
hostile requests against the real `chatforge serve` subprocess on a tiny random model."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_module():
    sys.path.insert(0, str(BENCH))  # serve_load imports its sibling inference.py
    spec = importlib.util.spec_from_file_location("serve_load", BENCH / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_64_streaming_clients_with_hostile_requests(tmp_path):
    load = _load_module()
    r = load.run_load(load.tiny_run(tmp_path), clients=64, rounds=1, max_tokens=8)
    assert r["alive"], r["server_log_tail"]
    assert r["failures"] == [], r["failures"][:5]
    assert r["valid_done"] == r["valid_expected"] == 64
    assert r["health"]["in_flight"] == 0 and r["health"]["busy_rows"] == 0
    assert r["health"]["refused"].get("body_too_large", 0) >= 16  # the hostile ones were refused
    assert r["health"]["cancelled_rows"] >= 1  # clients that hung up had their generation cancelled
    # memory back near the warm-up baseline (allocator noise, not per-request leaks)
    assert r["end_rss_mb"] - r["base_rss_mb"] < 0.1 * r["base_rss_mb"] + 20
