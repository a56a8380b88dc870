import subprocess
import sys

from chatforge.cli import STAGE_MODULES, main


def test_help_lists_every_stage(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "tokenizer", "train", "sample", "sft", "probe", "chat", "index", "serve", "eval", "speedrun"):
        assert cmd in out
    assert len(set(STAGE_MODULES)) == len(STAGE_MODULES)


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "chatforge", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "speedrun" in r.stdout
