"""chatforge.train: pretraining. Read in this order:

- trainer.py     `train(TrainConfig) -> run_dir` (the `chatforge train` command and the speedrun), `Trainer.step`
- loader.py      fixed-length windows from token shards, rank-sharded, resumable (`ShardLoader`)
- optim.py       `build_optimizers` (Muon for hidden matrices + AdamW), `set_lr`, `muon_momentum`
- muon_kernels.py  Muon's Newton-Schulz symmetric products in a Triton kernel (`sym_matmul`)
- schedule.py    `lr_multiplier` (warmup + WSD / cosine)
- evaluate.py    validation loss, bits-per-byte, sampled continuations
- checkpoint.py  `save_checkpoint` / `load_checkpoint` (weights + optimizer + data position + RNG)
- progress.py    `RunLogger` (log.jsonl, TensorBoard / W&B), tok/s, MFU, the progress line
- distributed.py torchrun setup, DDP / FSDP2 wrapping

SFT (chatforge/posttrain) reuses optim, schedule, checkpoint, progress and distributed.
"""
