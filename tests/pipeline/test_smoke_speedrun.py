"""The whole chain, for real: `chatforge speedrun --smoke` (every stage's CLI).

~25 s on 2 idle cores (measured), so it is in the default set: it is the test that catches a stage
whose CLI or output no longer fits the next one."""

import json
import subprocess
import sys



def test_smoke_speedrun_end_to_end_and_resume(tmp_path):
    out = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "chatforge", "speedrun", "--smoke", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("data build", "tokenizer train", "data tokenize", "train --preset", "sft --base", "eval ", "export "):
        assert f"$ chatforge {stage}" in first.stdout  # each stage's command is printed
    report = (out / "report.md").read_text()
    for heading in ("## Environment", "## Time and cost per stage", "## Data", "## Tokenizer", "## Training",
                    "## Evaluation", "## Sample conversations", "## Exported model"):
        assert heading in report
    assert (out / "loss.png").stat().st_size > 1000
    base = json.loads((out / "eval" / "base.json").read_text())
    chat = json.loads((out / "eval" / "sft.json").read_text())
    assert base["kind"] == "base" and chat["kind"] == "sft"
    assert 0 < base["tasks"]["bpb"]["bpb"] < 20
    assert "bpb" in chat["tasks"]

    # a second call finds every stage complete and only rewrites the report
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    ran = first.stdout.count("$ chatforge ")  # every stage the first call ran (other issues add stages)
    assert ran >= 8 and second.stdout.count("done earlier") == ran and "$ chatforge" not in second.stdout
