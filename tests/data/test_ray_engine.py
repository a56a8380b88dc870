"""`build(..., engine="ray")` on a local 2-CPU Ray: same documents and stats as the local build,
a worker killed mid-task is retried, a poisoned or corrupt input is skipped and named, and a
build killed mid-way resumes redoing only its unfinished tasks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from chatforge.data.build import BuildConfig, build, read_docs

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'chatforge[ray]')")

# no per-page time limit: under CPU contention a 1 s limit would make the two builds differ by chance
CFG = BuildConfig(extract_timeout=0)


def _docs(out):
    return [(d.id, d.url, d.text, d.meta) for p in sorted(out.glob("docs_*.jsonl.zst")) for d in read_docs(p)]


def _counts(stats):
    """Every step's counts, without the timings."""
    out = []
    for s in stats["steps"]:
        s = {k: v for k, v in s.items() if k != "seconds"}
        s["counters"] = {k: v for k, v in s["counters"].items() if not k.endswith("_seconds")}
        out.append(s)
    return out


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one costs ~15 s here); builds reuse it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_build(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    return out, build([str(planted["inputs"])], out, workers=2, config=CFG, quiet=True)


def test_ray_build_equals_local_build(planted, local_build, local_ray, tmp_path):
    out, stats = local_build
    assert stats["documents_out"] >= 2
    r = build([str(planted["inputs"])], tmp_path, workers=2, config=CFG, quiet=True, engine="ray")
    assert r["engine"] == "ray"
    assert _docs(tmp_path) == _docs(out)
    assert _counts(r) == _counts(stats)
    dd = next(s for s in r["steps"] if s["name"] == "dedup")
    assert dd["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}  # found across tasks, by band buckets


def test_warm_workers_reaches_every_worker(local_ray):
    from chatforge.data.ray_engine import warm_workers

    pids = warm_workers(CFG)
    assert len(pids) == 2  # one warm-up on each of the 2 CPUs' workers, not twice on one


def test_worker_killed_mid_task_is_retried(planted, local_build, local_ray, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv("CHATFORGE_TEST_KILL_TASK", f"0:{marker}")
    out = tmp_path / "o"
    r = build([str(planted["inputs"])], out, workers=2, config=CFG, quiet=True, engine="ray")
    assert marker.exists()  # the worker running task 0 did die (os._exit) after its first document
    assert _docs(out) == _docs(local_build[0])
    assert _counts(r) == _counts(local_build[1])


def test_poisoned_and_corrupt_inputs_skipped_and_named(planted, local_build, local_ray, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs = tmp_path / "in"
    shutil.copytree(planted["inputs"], inputs)
    # a parquet without the text column makes its reader raise every time: a poisoned input
    pq.write_table(pa.table({"content": ["no text column here"]}), inputs / "zz-poison.parquet")
    (inputs / "zz-garbage.warc.gz").write_bytes(os.urandom(3000))  # not gzip at all
    r = build([str(inputs)], tmp_path / "o", workers=2, config=CFG, quiet=True, engine="ray")
    read = next(s for s in r["steps"] if s["name"] == "read")
    assert read["dropped"]["poisoned_input"] == 1
    assert read["examples"]["poisoned_input"] == [str(inputs / "zz-poison.parquet")]
    assert str(inputs / "zz-garbage.warc.gz") in read["examples"]["corrupt_stream"]
    assert str(inputs / "zz-garbage.warc.gz") in r["bad_inputs"] and str(inputs / "cut.warc") in r["bad_inputs"]
    # everything else was built as without the bad files
    assert [d[2] for d in _docs(tmp_path / "o")] == [d[2] for d in _docs(local_build[0])]


def test_killed_build_resumes_redoing_only_unfinished_tasks(planted, local_build, local_ray, tmp_path):
    out = tmp_path / "o"
    code = ("import sys; from chatforge.data.build import BuildConfig, build; "
            f"build([{str(planted['inputs'])!r}], {str(out)!r}, workers=1, config=BuildConfig(extract_timeout=0), quiet=True)")
    env = dict(os.environ, CHATFORGE_TEST_KILL_TASK=f"2:{tmp_path / 'killed'}")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert p.returncode == 17, p.stderr.decode()[-2000:]  # the whole build died inside task 2
    work = out / "work"
    done = {f.name: f.stat().st_mtime_ns for f in work.glob("task_*.stats.json")}
    assert sorted(done) == ["task_00000.stats.json", "task_00001.stats.json"]
    assert not list(out.glob("docs_*")) and list(work.glob(".task_00002.*.tmp"))  # its half-written shard
    r = build([str(planted["inputs"])], out, workers=2, config=CFG, quiet=True, engine="ray")
    assert {f: (work / f).stat().st_mtime_ns for f in done} == done  # finished tasks were not redone
    assert _docs(out) == _docs(local_build[0]) and not list(work.glob(".*.tmp"))
    assert _counts(r) == _counts(local_build[1])


def test_progress_line_shows_rates_eta_and_workers():
    from chatforge.data.ray_engine import format_progress

    line = format_progress(12_000, 30_000_000, 10.0, 0.25, {"a1:10": [3, 1_200, "busy"], "a1:11": [5, 0, "idle"]})
    assert line.startswith("12,000 docs, 1,200 docs/s, 3.0 MB/s, ETA 0:30 | 1/2 busy: a1:10 t3 1,200 docs")
    assert "ETA ?" in format_progress(0, 0, 1.0, 0.0, {})


def test_eta_fraction_counts_running_tasks_by_bytes_read():
    from chatforge.data.ray_engine import _done_fraction

    # task 0 finished after reading 4x its (compressed) size; task 1 has read 200 bytes: half done
    assert _done_fraction({0: 100, 1: 100}, {0}, {0: 400, 1: 200}) == 0.75
    assert _done_fraction({0: 100, 1: 100}, set(), {0: 200}) == 0.25  # a WARC.gz's ratio, 4, before any finished
    assert _done_fraction({0: 100}, set(), {0: 10_000}) == 0.99  # never done before it finishes
    # a tiny finished file that yielded nothing does not make the big running one look finished
    assert 0.3 < _done_fraction({0: 1, 1: 1000}, {0}, {0: 0, 1: 2000}) < 0.6
