"""End to end `build` over real pages packed into WARC files, with planted cases (see conftest)."""

from __future__ import annotations

import json

from chatforge.data.build import BuildConfig, build, read_docs


def _docs(out):
    return [d for p in sorted(out.glob("docs_*.jsonl.zst")) for d in read_docs(p)]


def _step(stats, name):
    return next(s for s in stats["steps"] if s["name"] == name)


def test_stats_consistent(planted):
    stats = json.loads((planted["out"] / "stats.json").read_text())
    steps = stats["steps"]
    assert [s["name"] for s in steps] == ["read", "url_filter", "extract", "language", "gopher_repetition",
                                          "gopher_quality", "c4", "fineweb_quality", "minhash_signatures", "dedup", "pii"]
    for s in steps:
        assert s["in"] == s["kept"] + sum(s["dropped"].values()), s["name"]
    for a, b in zip(steps, steps[1:]):
        assert b["in"] == a["kept"], (a["name"], b["name"])
    assert stats["documents_out"] == steps[-1]["kept"] == len(_docs(planted["out"]))


def test_planted_duplicates_removed(planted):
    docs = _docs(planted["out"])
    dd = _step(planted["stats"], "dedup")
    assert dd["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}
    marker = planted["exp"]["with"][1]
    assert sum(marker in d.text for d in docs) == 1  # one of original / mirror / near copy survives
    kept = next(d for d in docs if marker in d.text)
    assert kept.url == planted["url"]  # the first in input order is the one kept


def test_planted_pii_redacted(planted):
    docs = _docs(planted["out"])
    pii_doc = next(d for d in docs if d.url == planted["pii_url"])
    assert "jane.roe@gmail.com" not in pii_doc.text and "93.184.216.34" not in pii_doc.text
    assert "example." in pii_doc.text  # the placeholder address
    c = _step(planted["stats"], "pii")["counters"]
    assert c["emails"] >= 1 and c["ips"] >= 1


def test_non_english_and_blocklisted_dropped(planted):
    docs = _docs(planted["out"])
    assert not any(d.url == planted["de_url"] for d in docs)
    assert _step(planted["stats"], "language")["dropped"].get("language_not_kept", 0) >= 1
    assert _step(planted["stats"], "url_filter")["dropped"] == {"blocklisted_domain": 1}
    assert not any("0-1sex" in d.url for d in docs)
    for d in docs:
        assert d.meta["language"] == "en" and d.meta["language_score"] >= 0.65


def test_boilerplate_gone_from_real_page(planted):
    doc = next(d for d in _docs(planted["out"]) if d.url == planted["url"])
    flat = " ".join(doc.text.split())
    for s in planted["exp"]["with"]:
        assert " ".join(s.split()) in flat
    for s in planted["exp"]["without"]:
        assert " ".join(s.split()) not in flat


def test_truncated_warc_counted_not_fatal(planted):
    read = _step(planted["stats"], "read")
    assert read["dropped"].get("truncated_record", 0) + read["dropped"].get("corrupt_stream", 0) >= 1
    # the complete first record of the cut file still made it through reading
    assert read["kept"] == 4 + 2 + 1


def test_resume_redoes_nothing_and_duplicates_nothing(planted, tmp_path):
    import shutil

    out = tmp_path / "o"
    shutil.copytree(planted["out"], out)
    before = sorted(d.id for d in _docs(out))
    # simulate a build killed after filtering, before its final shards: drop one finished output
    first = sorted(out.glob("docs_*.jsonl.zst"))[0]
    k = first.name.split("_")[1].split(".")[0]
    first.unlink()
    (out / "work" / f"out_{k}.stats.json").unlink()
    # and its filter pass too (its intermediate shard is deleted once the final one exists)
    (out / "work" / f"task_{k}.stats.json").unlink()
    (out / "work" / "dedup.json").unlink()
    stats = build([str(planted["inputs"])], out, workers=1, config=BuildConfig(), quiet=True)
    after = sorted(d.id for d in _docs(out))
    assert after == before and len(set(after)) == len(after)
    assert [(s["name"], s["in"], s["kept"], s["dropped"]) for s in stats["steps"]] == [
        (s["name"], s["in"], s["kept"], s["dropped"]) for s in planted["stats"]["steps"]]


def test_rebuild_with_other_settings_refused(planted, tmp_path):
    import shutil

    import pytest

    from chatforge.common import ChatforgeError

    out = tmp_path / "o"
    shutil.copytree(planted["out"], out)
    with pytest.raises(ChatforgeError, match="other inputs or settings"):
        build([str(planted["inputs"])], out, config=BuildConfig(language_threshold=0.5), quiet=True)


def test_poisoned_and_corrupt_inputs_skipped_and_named_locally(planted, tmp_path):
    """The local pool, like the Ray engine, finishes the build without the bad files and names them."""
    import os
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs = tmp_path / "in"
    shutil.copytree(planted["inputs"], inputs)
    pq.write_table(pa.table({"content": ["no text column here"]}), inputs / "zz-poison.parquet")  # raises every time
    (inputs / "zz-garbage.warc.gz").write_bytes(os.urandom(3000))
    r = build([str(inputs)], tmp_path / "o", workers=2, config=BuildConfig(), quiet=True)
    read = _step(r, "read")
    assert read["dropped"]["poisoned_input"] == 1
    assert read["examples"]["poisoned_input"] == [str(inputs / "zz-poison.parquet")]
    assert str(inputs / "zz-garbage.warc.gz") in read["examples"]["corrupt_stream"]
    assert r["bad_inputs"] == sorted([str(inputs / "zz-poison.parquet"), str(inputs / "zz-garbage.warc.gz"),
                                      str(inputs / "cut.warc")])
    assert r["documents_out"] == planted["stats"]["documents_out"]
    assert not list((tmp_path / "o" / "work").glob("probe_*"))  # the probes' scratch folders are gone


def test_local_build_does_not_import_ray(planted, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from chatforge.data.build import BuildConfig, build; "
            f"build([{str(planted['inputs'])!r}], {str(tmp_path / 'o')!r}, workers=1, config=BuildConfig(), quiet=True); "
            "print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "False"


def test_task_log_one_line_per_task_and_pass(planted, tmp_path, monkeypatch):
    """CHATFORGE_TASK_LOG: the per-task timeline benchmarks/data_scaling.py reads (off by default)."""
    log = tmp_path / "tasks.jsonl"
    monkeypatch.setenv("CHATFORGE_TASK_LOG", str(log))
    r = build([str(planted["inputs"])], tmp_path / "o", workers=2, config=BuildConfig(), quiet=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for what in ("filter", "finish"):
        mine = [x for x in rows if x["pass"] == what]
        assert sorted(x["task"] for x in mine) == list(range(r["tasks"]))
        assert all(x["start"] <= x["end"] and x["pid"] > 0 for x in mine)
    last_filter = max(x["end"] for x in rows if x["pass"] == "filter")
    assert all(x["start"] >= last_filter for x in rows if x["pass"] == "finish")


def test_warm_up_page_passes_every_step():
    """build.warm_pipeline's made-up page must reach every step, or the warm-up skips some."""
    from chatforge.data.build import _WARM_UP_PAGE, make_stage1_steps, warm_pipeline
    from chatforge.data.pii import PIIRedactor
    from chatforge.data.steps import Doc, run_steps

    cfg = BuildConfig(domain_blocklists=(), url_blocklists=())
    steps, pii = make_stage1_steps(cfg), PIIRedactor()
    out = list(pii(run_steps([Doc("w", _WARM_UP_PAGE, "https://www.example.com/warm-up", {"format": "html"})], steps)))
    assert len(out) == 1 and all(s.stats.kept == 1 for s in steps)
    assert pii.stats.counters["emails"] == 1
    warm_pipeline(cfg)


def test_plan_tasks_gives_each_worker_its_share(tmp_path):
    from chatforge.data.build import plan_tasks

    files = []
    for i in range(16):
        f = tmp_path / f"part{i:02d}.warc.gz"
        f.write_bytes(b"x" * 1000)
        files.append(f)
    # 16 equal files on 2 workers: 8 tasks each by default (1 file a task), 4 each when asked
    assert [len(t) for t in plan_tasks(files, 1 << 20, workers=2)] == [1] * 16
    assert [len(t) for t in plan_tasks(files, 1 << 20, workers=2, per_worker=4)] == [2] * 8
    # never smaller than one file, never bigger than task_bytes, order kept
    assert plan_tasks(files, 1 << 20, workers=2, per_worker=64) == [[str(f)] for f in files]
    assert [len(t) for t in plan_tasks(files, 2500, workers=1, per_worker=4)] == [2] * 8
