import json

from chatforge.pipeline import inputs


def test_shared_inputs(shared_data):
    small = inputs.shared_inputs("small")
    full = inputs.shared_inputs("all")
    assert [p.name for p in small] == ["cc-main-2020-34-excerpt.warc.gz", "tinyshakespeare.txt"]
    assert set(small) < set(full)
    assert not any("wikitext-2-test" in str(p) for p in full)  # held out for bits-per-byte
    files, desc, heldout = inputs.resolve_inputs("shared", "/nonexistent")
    assert desc.startswith("../shared/data") and len(files) == len(full) and heldout is None


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
    for i in range(40):  # enough texts that some are held out
        (docs / "pkg" / f"note{i:02d}.md").write_text(f"Note number {i} explains a feature in detail. " * 10)
    files, desc, heldout = inputs.resolve_inputs("shared", tmp_path / "run")
    assert "documentation" in desc
    jsonl = tmp_path / "run" / "local-text" / "local.jsonl"
    assert files[0] == str(jsonl) and files[1].endswith("manual.html")
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    names = {r["url"].rsplit("/", 1)[1] for r in recs}
    assert {"README.txt", "copyright"} <= names and len(recs) == 42 - 2  # 42 texts, every 20th held out
    held = open(heldout).read()
    assert held.count("explains a feature") == 20  # two held-out notes of 10 sentences
    # sorted walk: README.txt, copyright, note00.. -> the 20th and 40th texts are note17 and note37
    assert "Note number 17 " in held and "Note number 37 " in held
    assert "Note number 17 " not in jsonl.read_text() and "Note number 18 " in jsonl.read_text()
    # a second call reuses the collected files
    assert inputs.resolve_inputs("local", tmp_path / "run")[0] == files
    assert inputs.resolve_inputs("local", tmp_path, explicit=["a.txt"]) == (["a.txt"], "user-supplied inputs", None)
