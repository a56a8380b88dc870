import json

from chatforge.pipeline import inputs


def test_shared_inputs(shared_data):
    small = inputs.shared_inputs("small")
    full = inputs.shared_inputs("all")
    assert [p.name for p in small] == ["cc-main-2020-34-excerpt.warc.gz", "tinyshakespeare.txt"]
    assert set(small) < set(full)
    assert not any("wikitext-2-test" in str(p) for p in full)  # held out for bits-per-byte
    files, desc = inputs.resolve_inputs("shared", "/nonexistent")
    assert desc.startswith("../shared/data") and len(files) == len(full)


def test_local_inputs_fall_back_to_machine_docs(tmp_path, monkeypatch):
    docs = tmp_path / "doc"
    (docs / "pkg").mkdir(parents=True)
    (docs / "pkg" / "README.txt").write_text("This package does useful things. " * 20)
    (docs / "pkg" / "copyright").write_text("Permission is hereby granted, free of charge. " * 10)
    (docs / "pkg" / "changelog.txt").write_text("1.0: fixed. " * 100)  # skipped: a changelog
    (docs / "pkg" / "tiny.txt").write_text("short")  # skipped: too short
    (docs / "pkg" / "blob.txt").write_bytes(b"\x00\x01" * 500)  # skipped: binary
    (docs / "pkg" / "manual.html").write_text("<html><body><p>Manual</p></body></html>")
    monkeypatch.setattr(inputs, "LOCAL_TEXT_ROOTS", [str(docs)])
    monkeypatch.setattr(inputs, "shared_data_dir", lambda: None)
    files, desc = inputs.resolve_inputs("shared", tmp_path / "run")
    assert "documentation" in desc
    jsonl = tmp_path / "run" / "local-text" / "local.jsonl"
    assert files[0] == str(jsonl) and files[1].endswith("manual.html")
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(r["url"].rsplit("/", 1)[1] for r in recs) == ["README.txt", "copyright"]
    # a second call reuses the collected file
    assert inputs.resolve_inputs("local", tmp_path / "run")[0] == files
    assert inputs.resolve_inputs("local", tmp_path, explicit=["a.txt"]) == (["a.txt"], "user-supplied inputs")
