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

    run = tmp_path / "run"
    # steps 1-2: 2 processes with the same global batch give the single-process losses
    torchrun(tiny_shards, run, "--steps", "6", "--stop-after", "2")
    assert sorted(losses(run)) == [1, 2] and close(ref, losses(run))
    # steps 3-4: the DDP checkpoint resumes in one process
    train(TrainConfig(data=str(tiny_shards), out=str(run), **ARGS, steps=6, stop_after=4, resume=True))
    assert sorted(losses(run)) == [1, 2, 3, 4] and close(ref, losses(run))
    # steps 5-6: the single-process checkpoint resumes under torchrun
    torchrun(tiny_shards, run, "--steps", "6", "--resume")
    assert sorted(losses(run)) == list(range(1, 7)) and close(ref, losses(run))


@pytest.mark.slow
def test_fsdp2_matches_single_process(tiny_shards, tmp_path):
    single = tmp_path / "single"
    train(TrainConfig(data=str(tiny_shards), out=str(single), **ARGS, steps=4))
    fsdp = tmp_path / "fsdp"
    torchrun(tiny_shards, fsdp, "--steps", "4", "--dist", "fsdp", "--stop-after", "2")
    torchrun(tiny_shards, fsdp, "--steps", "4", "--dist", "fsdp", "--resume")
    assert sorted(losses(fsdp)) == [1, 2, 3, 4] and close(losses(single), losses(fsdp))
