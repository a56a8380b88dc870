"""issue 8 on CPU: torchrun (gloo) gives the single-process losses, and checkpoints cross world sizes."""

import json
import os
import subprocess
import sys

import pytest

from chatforge.train.trainer import TrainConfig, train

ARGS = dict(preset="d2", seq_len=64, batch_tokens=512, eval_every=1000, log_every=1, save_every=1000, device="cpu",
            quiet=True, data_order="sequential")


def losses(run_dir):
    recs = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}


def torchrun(shards, out, *extra, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "chatforge", "train", "--data", str(shards), "--out", str(out), "--preset", "d2", "--seq-len", "64",
           "--batch-tokens", "512", "--eval-every", "1000", "--log-every", "1", "--save-every", "1000",
           "--device", "cpu", "--data-order", "sequential", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def close(a, b):
    return all(a[s] == pytest.approx(b[s], rel=2e-4, abs=2e-4) for s in b)


def test_ddp_matches_single_process_and_checkpoints_cross_world_sizes(tiny_shards, tmp_path):
    single = tmp_path / "single"
    train(TrainConfig(data=str(tiny_shards), out=str(single), **ARGS, steps=6))
    ref = losses(single)

    # 2 processes, same global batch: same losses
    ddp = tmp_path / "ddp"
    torchrun(tiny_shards, ddp, "--steps", "6", "--stop-after", "3")
    assert close(ref, losses(ddp)) and max(losses(ddp)) == 3
    # ... and its checkpoint resumes in one process
    train(TrainConfig(data=str(tiny_shards), out=str(ddp), **ARGS, steps=6, resume=True))
    assert sorted(losses(ddp)) == list(range(1, 7)) and close(ref, losses(ddp))

    # a single-process checkpoint resumes under torchrun
    one = tmp_path / "one"
    train(TrainConfig(data=str(tiny_shards), out=str(one), **ARGS, steps=6, stop_after=3))
    torchrun(tiny_shards, one, "--steps", "6", "--resume")
    assert sorted(losses(one)) == list(range(1, 7)) and close(ref, losses(one))


@pytest.mark.slow
def test_fsdp2_matches_single_process(tiny_shards, tmp_path):
    single = tmp_path / "single"
    train(TrainConfig(data=str(tiny_shards), out=str(single), **ARGS, steps=4))
    fsdp = tmp_path / "fsdp"
    torchrun(tiny_shards, fsdp, "--steps", "4", "--dist", "fsdp", "--stop-after", "2")
    torchrun(tiny_shards, fsdp, "--steps", "4", "--dist", "fsdp", "--resume")
    assert sorted(losses(fsdp)) == [1, 2, 3, 4] and close(losses(single), losses(fsdp))
