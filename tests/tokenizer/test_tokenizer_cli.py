import gzip
import json
import lzma

import pytest

from chatforge.cli import main
from chatforge.tokenizer import Tokenizer


def _run(capsys, *argv):
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return rc, out, err


def _user_error(capsys, *argv):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2, (out, err)
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1
    return err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    text = "".join(f"Line {i}: the cat sat on the mat, and the dog ate {i * 7} bones.\n" for i in range(400))
    (d / "a.txt").write_text(text)
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        for i in range(100):
            f.write(json.dumps({"text": f"Document {i} about tokenizers and merges.", "id": i}) + "\n")
        f.write("not json\n")
    (d / "c.txt.xz").write_bytes(lzma.compress("Compressed text is read too. ".encode() * 50))
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # not a corpus suffix: ignored
    return d


def test_train_encode_show_report(capsys, corpus, tmp_path):
    out_dir = tmp_path / "tok"
    rc, out, err = _run(capsys, "tokenizer", "train", corpus, "--vocab-size", 400, "--out", out_dir,
                        "--num-proc", 1)
    assert rc == 0 and "trained vocab 400" in out
    tok = Tokenizer.load(out_dir)
    assert tok.meta["files"] == 3 and tok.meta["skipped_records"] == 1
    assert (out_dir / "tokenizer.json").is_file()

    rc, out, _ = _run(capsys, "tokenizer", "encode", out_dir, "the cat sat")
    assert rc == 0 and [int(x) for x in out.split()] == tok.encode("the cat sat")

    html_file = tmp_path / "t.html"
    rc, out, _ = _run(capsys, "tokenizer", "show", out_dir, "the cat <|bos|>", "--html", html_file,
                      "--allow-special")
    assert rc == 0 and "tokens" in out and "chars/token" in out
    page = html_file.read_text()
    assert f'title="id {tok.bos_id} (special)"' in page and "http" not in page  # self-contained

    hf_only = tmp_path / "hf_only"  # a directory with just a Hugging Face tokenizer.json
    hf_only.mkdir()
    (hf_only / "tokenizer.json").write_bytes((out_dir / "tokenizer.json").read_bytes())
    rc, out, _ = _run(capsys, "tokenizer", "report", out_dir, "--text", corpus / "a.txt",
                      "--compare", out_dir, hf_only)
    assert rc == 0 and "bytes/token" in out and "vocab usage" in out
    assert out.count(" 1.000x") == 3  # itself, a copy, and its HF export: identical token counts


def test_bad_inputs_are_one_line_errors(capsys, tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in _user_error(capsys, "tokenizer", "train", empty, "--out", tmp_path / "o", "--quiet")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 40)
    assert "binary" in _user_error(capsys, "tokenizer", "train", binary, "--out", tmp_path / "o", "--quiet")
    assert "at least 276" in _user_error(capsys, "tokenizer", "train", corpus, "--vocab-size", 100,
                                         "--out", tmp_path / "o", "--quiet")
    assert "not found" in _user_error(capsys, "tokenizer", "train", tmp_path / "nope.txt",
                                      "--out", tmp_path / "o", "--quiet")
    assert "not a tokenizer directory" in _user_error(capsys, "tokenizer", "encode", tmp_path, "x")
    bad_xz = tmp_path / "bad.txt.xz"
    bad_xz.write_bytes(b"definitely not xz")
    assert "cannot read" in _user_error(capsys, "tokenizer", "train", bad_xz, "--out", tmp_path / "o", "--quiet")
