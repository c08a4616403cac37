"""Data-parallel bookkeeping of the training loop that a single process can check.

Why: under DDP each rank must draw its own random starts (PGD's start in the
L-inf/L2 ball, TRADES' Gaussian start) and dropout masks, while a single process
keeps the seeds its recorded runs were made with; and a checkpoint's position
inside an epoch only means something for the number of processes that wrote it,
so resuming under another world size must be refused, not silently shifted.
(The multi-process runs themselves are in test_distributed*.py.)
"""

from __future__ import annotations

import json

import pytest
import torch

from adrnet.config import config_from_dict
from adrnet.errors import ConfigError
from adrnet.train import train
from adrnet.runs.checkpoint import checkpoint_files
from adrnet.train.resume import _local_running
from adrnet.train.loop import step_seed
from _train_helpers import tiny_config


def test_single_process_step_seed_is_unchanged():
    # the seeds single-process runs (and their bit-identical resumes) were made with,
    # written down: a change of the hash, the stream number or the parts hashed for a
    # single process would silently change every recorded run
    pinned = {(0, 0, 0): 3302526206250582943,
              (7, 3, 11): 6739292607149776341,
              (123, 9, 400): 2544235615737342808}
    for (seed, epoch, step), expected in pinned.items():
        assert step_seed(seed, epoch, step) == expected
        assert step_seed(seed, epoch, step, rank=0, world_size=1) == expected


def test_ranks_get_different_step_seeds_and_random_starts():
    # written down, so that a change of what each rank's seed hashes shows up here
    pinned = {2: [5306378950398366704, 2556367586256377939],
              4: [7761505571495815825, 6060952925899655082, 904447129157774813,
                  34189854362819500]}
    next_step = {2: 3333753718524664180, 4: 3237052438037204269}
    for world_size in (2, 4):
        seeds = [step_seed(5, 2, 17, rank, world_size) for rank in range(world_size)]
        assert seeds == pinned[world_size]
        assert len(set(seeds)) == world_size
        # rank 0 of several processes does not reuse the single-process seed
        assert seeds[0] != step_seed(5, 2, 17)
        assert step_seed(5, 2, 18, 1, world_size) == next_step[world_size]  # new each step
        starts = []  # what a PGD random start in the eps-ball draws on each rank
        for seed in seeds:
            torch.manual_seed(seed)
            starts.append(torch.empty(8, 3).uniform_(-0.03, 0.03))
        assert not torch.equal(starts[0], starts[1])


def test_rank_zero_keeps_the_saved_sums_the_others_start_from_zero():
    saved = {"examples": 64, "seconds": 2.0, "sum_loss": 40.0, "correct_adv": 30,
             "lr": 0.1, "eps": 0.03}
    main = _local_running(saved, is_main=True)
    assert main == {"examples": 64, "seconds": 2.0, "sum_loss": 40.0, "correct_adv": 30,
                    "lr": 0.1, "eps": 0.03}
    main["sum_loss"] += 1.0  # the running sums go on from a copy, not the record itself
    assert saved["sum_loss"] == 40.0
    assert _local_running(saved, is_main=False) == {"lr": 0.1, "eps": 0.03}


def test_resume_with_another_world_size_is_refused(tmp_path):
    cfg = config_from_dict(tiny_config(data={"train_subset": 64}, train={"epochs": 1}))
    run_dir = tmp_path / "run"
    train(cfg, run_dir)
    meta_path = checkpoint_files(run_dir, "last").path("meta")
    record = json.loads(meta_path.read_text())
    assert record["world_size"] == 1  # what this process wrote
    record["world_size"] = 2  # as if written by `torchrun --nproc_per_node=2`
    meta_path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"with 1 process\(es\): it was trained with 2 "
                                          r"process\(es\)") as refused:
        train(cfg, run_dir, resume=True)
    assert "--nproc_per_node=2" in str(refused.value)
