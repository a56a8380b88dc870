"""issue 8 on CPU: torchrun (gloo) gives the single-process losses, and checkpoints cross world sizes."""

import json
import sys

import pytest
import torch

from chatforge.train.trainer import TrainConfig, train

ARGS = dict(preset="d2", seq_len=64, batch_tokens=512, eval_every=1000, log_every=1, save_every=1000, device="cpu",
            quiet=True, data_order="sequential")


def losses(run_dir):
    recs = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}


def torchrun(run, shards, out, *extra, nproc=2):
    """`chatforge train` under torchrun on CPU; run is the run_reporting_hangs fixture."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "chatforge", "train", "--data", str(shards), "--out", str(out), "--preset", "d2", "--seq-len", "64",
           "--batch-tokens", "512", "--eval-every", "1000", "--log-every", "1", "--save-every", "1000",
           "--device", "cpu", "--data-order", "sequential", *extra]
    r = run(cmd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def close(a, b):
    return all(a[s] == pytest.approx(b[s], rel=2e-4, abs=2e-4) for s in b)


def test_ddp_matches_single_process_and_checkpoints_cross_world_sizes(tiny_shards, tmp_path, run_reporting_hangs):
    single = tmp_path / "single"
    train(TrainConfig(data=str(tiny_shards), out=str(single), **ARGS, steps=6))
    ref = losses(single)

    run = tmp_path / "run"
    # steps 1-2: 2 processes with the same global batch give the single-process losses
    torchrun(run_reporting_hangs, tiny_shards, run, "--steps", "6", "--stop-after", "2")
    assert sorted(losses(run)) == [1, 2] and close(ref, losses(run))
    # steps 3-4: the DDP checkpoint resumes in one process
    train(TrainConfig(data=str(tiny_shards), out=str(run), **ARGS, steps=6, stop_after=4, resume=True))
    assert sorted(losses(run)) == [1, 2, 3, 4] and close(ref, losses(run))
    # steps 5-6: the single-process checkpoint resumes under torchrun
    torchrun(run_reporting_hangs, tiny_shards, run, "--steps", "6", "--resume")
    assert sorted(losses(run)) == list(range(1, 7)) and close(ref, losses(run))


@pytest.mark.slow
def test_fsdp2_matches_single_process(tiny_shards, tmp_path, run_reporting_hangs):
    single = tmp_path / "single"
    train(TrainConfig(data=str(tiny_shards), out=str(single), **ARGS, steps=4))
    fsdp = tmp_path / "fsdp"
    torchrun(run_reporting_hangs, tiny_shards, fsdp, "--steps", "4", "--dist", "fsdp", "--stop-after", "2")
    torchrun(run_reporting_hangs, tiny_shards, fsdp, "--steps", "4", "--dist", "fsdp", "--resume")
    assert sorted(losses(fsdp)) == [1, 2, 3, 4] and close(losses(single), losses(fsdp))


FP8_SCRIPT = r"""
import gc
import sys
import torch
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.train import distributed as D
from chatforge.train.trainer import Trainer

calls = []
scaled_mm = torch._scaled_mm
torch._scaled_mm = lambda *a, **k: calls.append(1) or scaled_mm(*a, **k)  # count the FP8 matmuls

info = D.setup("cpu")
torch.manual_seed(0)
model = GPT(GPTConfig.from_preset("d2", vocab_size=256, seq_len=32))
tr = Trainer(model, info, dist_mode=sys.argv[1], compile=False, fp8="off")
model.set_fp8("all")  # CPUs have no FP8 tensor cores, so force it: CPU _scaled_mm runs the same code
data = torch.randint(0, 256, (8, 33), generator=torch.Generator().manual_seed(1))  # one batch of 8 rows, 4 times


class Rows:  # this rank's share of the step's 8 rows
    rows = data.chunk(info.world_size)[info.rank]

    def next_batch(self):
        return self.rows[:, :-1], self.rows[:, 1:]


out = []
for step in range(4):
    loss, _ = tr.step(Rows(), 1)
    out.append(float(D.all_reduce_mean(loss.detach())))
if info.is_main:
    print("FP8_MATMULS", len(calls))
    print("LOSSES", *out)
del tr, model  # as in `chatforge train`: DDP's reducer goes before its process group, or exit can abort
gc.collect()
D.teardown()
"""


def _fp8_losses(run, tmp_path, mode, nproc):
    script = tmp_path / "fp8_dist.py"
    script.write_text(FP8_SCRIPT)
    cmd = [sys.executable, str(script), mode] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(script), mode]
    r = run(cmd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    fp8_matmuls = next(int(ln.split()[1]) for ln in r.stdout.splitlines() if ln.startswith("FP8_MATMULS"))
    assert fp8_matmuls == 4 * 9 * 3  # 4 steps x (2 layers x 4 matmuls + head) x (forward + 2 backward)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("LOSSES"))
    return [float(v) for v in line.split()[1:]]


@pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="this torch has no _scaled_mm")
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_fp8_all_trains_under_ddp_and_fsdp2_like_one_process(tmp_path, mode, run_reporting_hangs):
    """FP8 is the default on H100s, also under torchrun: its autograd functions must work on DDP's
    replicas and FSDP2's gathered parameters. Each rank measures its own dynamic scales, so the
    losses match one process closely, not bit for bit."""
    single = _fp8_losses(run_reporting_hangs, tmp_path, mode, 1)
    dist = _fp8_losses(run_reporting_hangs, tmp_path, mode, 2)
    assert single[-1] < single[0]
    assert dist == pytest.approx(single, rel=2e-3)


def test_a_hung_worker_is_reported_with_its_traceback(run_reporting_hangs):
    worker = "import time\ndef stuck_here():\n    time.sleep(60)\nstuck_here()"
    launcher = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {worker!r}])"
    with pytest.raises(pytest.fail.Exception, match="line 3 in stuck_here"):
        run_reporting_hangs([sys.executable, "-c", launcher], timeout=2)
