"""adrnet.train.distributed under real 2-process runs on CPU (gloo).

Why: under DDP the global ADR terms (Bui et al., ECCV 2020) must pair each rank's
adversarial rows with the clean columns of *all* ranks, or the objective silently
changes (method.md, "Under data-parallel training"). These tests launch real
process groups twice per session: once with ``torchrun --standalone`` (this file
is the worker script) and once with ``torch.multiprocessing.spawn``. Each worker
writes its observations to a file; the tests below assert on them.
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from adrnet.attacks import Linf, pgd
from adrnet.objectives import make_objective
from adrnet.train import distributed as D

WORLD = 2
BATCH = 8  # global batch; each rank holds BATCH // WORLD examples
OBJECTIVE_NAMES = ["adr_pgd", "adr_trades"]
TIMEOUT = datetime.timedelta(seconds=60)


# ----------------------------------------------------------------- tiny models
class TinyNet(nn.Module):
    """conv -> [optional BatchNorm] -> ReLU -> z -> linear head; Classifier's forward."""

    def __init__(self, batchnorm: bool = False, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4) if batchnorm else nn.Identity()
        self.head = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x, return_latent=False):
        z = F.relu(self.norm(self.conv(x))).flatten(1)
        logits = self.head(z)
        return (logits, z) if return_latent else logits


def sign_attack(model, x, y, *, eps=0.1, steps=2, record=None):
    """Deterministic L-inf PGD without random start (eval mode, input gradients only)."""
    if record is not None:
        record.append(isinstance(model, DistributedDataParallel))
    was_training = model.training
    model.eval()
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = (x_adv.detach() + eps / steps * grad.sign())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    model.train(was_training)
    return x_adv.detach()


def fixed_batch(dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, 1, 6, 6, generator=generator, dtype=dtype)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    return x, y


# --------------------------------------------------------------- worker checks
def check_gather(info):
    """Rank r contributes r+1 rows filled with r (and int labels); gather them back."""
    rows = info.rank + 1
    leaf = torch.full((rows, 3), float(info.rank), requires_grad=True)
    gathered = D.gather_detached(leaf * 1.0)
    labels = D.gather_detached(torch.arange(rows) + 10 * info.rank)
    equal = D.gather_detached(torch.full((2,), float(info.rank), dtype=torch.float64))
    half = D.gather_detached(torch.full((1, 2), info.rank + 0.5, dtype=torch.bfloat16))
    try:  # trailing dimensions differ: the same error on every rank, no hang
        D.gather_detached(torch.zeros(1, info.rank + 1))
        mismatch = "no error"
    except ValueError as error:
        mismatch = str(error)
    return {"gathered": gathered, "gathered_requires_grad": gathered.requires_grad,
            "gathered_has_grad_fn": gathered.grad_fn is not None,
            "labels": labels, "equal": equal, "bf16": half, "mismatch": mismatch,
            "sum": D.all_reduce_sum(torch.tensor([1.0, float(info.rank)])),
            "mean_float": D.all_reduce_mean(float(info.rank)),
            "mean_tensor": D.all_reduce_mean(torch.tensor(float(info.rank) * 2))}


def check_running_sums(info):
    """The epoch's running sums of both ranks added up (a key may be missing on one)."""
    from adrnet.train.metrics import averages, sum_over_ranks
    mine = ({"examples": 3, "seconds": 1.0, "sum_loss": 3.0, "correct_adv": 2} if info.rank == 0
            else {"examples": 5, "seconds": 3.0, "sum_loss": 10.0, "correct_adv": 4,
                  "sum_entropy": 1.5})
    total = sum_over_ranks({**mine, "lr": 0.1, "eps": 0.03}, info.world_size)
    return {"total": total, "averages": averages(total, info.world_size)}


def _objective_grads(objective, model, x, y, attack, gather):
    out = objective(model, x, y, attack, gather=gather)
    out["loss"].backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    terms = {k: v.detach() for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0}
    return grads, terms


def check_exactness(info):
    """DDP gradients of ADR with gather == single-process gradients on the full batch."""
    seen = []
    report = {name: _exactness_of(make_objective(name), info, seen) for name in OBJECTIVE_NAMES}
    return {**report, "attack_saw_ddp": any(seen), "attack_calls": len(seen)}


def _exactness_of(objective, info, seen):
    torch.manual_seed(0)
    model = TinyNet().double()
    x, y = fixed_batch()
    attack = lambda m, xb, yb: sign_attack(m, xb, yb, record=seen)  # noqa: E731
    shard = slice(info.rank * (BATCH // WORLD), (info.rank + 1) * (BATCH // WORLD))
    ref_grads, ref_terms = _objective_grads(objective, copy.deepcopy(model), x, y, attack, None)
    ddp = D.wrap_ddp(copy.deepcopy(model), info)
    gather_grads, gather_terms = _objective_grads(
        objective, ddp, x[shard], y[shard], attack, D.gather_detached)
    local_grads, _ = _objective_grads(
        objective, D.wrap_ddp(copy.deepcopy(model), info), x[shard], y[shard], attack, None)
    return {"wrapped": isinstance(ddp, DistributedDataParallel),
            "ref_grads": ref_grads, "gather_grads": gather_grads, "local_grads": local_grads,
            "ref_terms": ref_terms,
            "gather_terms": {k: D.all_reduce_mean(v) for k, v in gather_terms.items()}}


def check_batchnorm_two_pass(info):
    """Clean and adversarial forwards through DDP+BatchNorm, one backward, two SGD steps."""
    torch.manual_seed(0)
    ddp = D.wrap_ddp(TinyNet(batchnorm=True), info)
    start = torch.cat([p.detach().flatten().clone() for p in ddp.parameters()])
    optimiser = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    x, y = fixed_batch(torch.float32, seed=info.rank + 1)  # different data per rank
    seen, modes = [], []

    def attack(model, xb, yb):  # adrnet's PGD (eval mode inside), handed what the objective gives
        seen.append(isinstance(model, DistributedDataParallel))
        return pgd(model, xb, yb, threat=Linf(0.1), steps=2, step_size=0.05, random_start=False)

    objective = make_objective("pgd_at", ce_clean=1.0)  # CE(clean) + CE(adv): two passes
    for _ in range(2):
        loss = objective(ddp, x, y, attack)["loss"]  # Objective.__call__ on the DDP model
        modes.append([m.training for m in ddp.modules()])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    norm = D.unwrap(ddp).norm
    training_restored = len(seen) == 2 and all(all(step) for step in modes)
    before = torch.cat([norm.running_mean, norm.running_var]).clone()
    D.average_buffers(ddp)
    after = torch.cat([norm.running_mean, norm.running_var]).clone()
    with torch.no_grad():  # a forward must not overwrite rank-local buffers with rank 0's
        norm.running_mean.fill_(float(info.rank))
        ddp.eval()
        ddp(x)
    return {"wrapped": isinstance(ddp, DistributedDataParallel), "attack_saw_ddp": any(seen),
            "training_restored": training_restored, "start": start,
            "params": torch.cat([p.detach().flatten() for p in ddp.parameters()]),
            "stats_before": before, "stats_after": after,
            "probe": norm.running_mean.clone(),
            "batches_tracked": int(norm.num_batches_tracked)}


def run_worker(checks, out_dir: Path) -> None:
    """Join the group torchrun/spawn described, run ``checks``, save what they saw."""
    torch.set_num_threads(1)
    info = D.setup_distributed("cpu", timeout=TIMEOUT)
    try:
        report = {"rank": info.rank, "world_size": info.world_size,
                  "local_rank": info.local_rank, "is_main": info.is_main,
                  "device": str(info.device)}
        for check in checks:
            report[check.__name__] = check(info)
        torch.save(report, out_dir / f"rank{info.rank}.pt")
        if info.is_main:  # rank 0 comes late to cleanup, which must wait for it
            time.sleep(0.5)
        (out_dir / f"rank{info.rank}.leaving").touch()
    finally:
        D.cleanup()
    peers = [out_dir / f"rank{r}.leaving" for r in range(info.world_size)]
    (out_dir / f"rank{info.rank}.left").write_text(str(all(p.exists() for p in peers)))


def spawn_entry(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run_worker([check_batchnorm_two_pass, check_gather], Path(out_dir))


def _load_reports(out_dir: Path) -> list[dict]:
    reports = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for rank, report in enumerate(reports):
        report["cleanup_waited"] = (out_dir / f"rank{rank}.left").read_text() == "True"
    return reports


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def torchrun_reports(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={WORLD}", __file__, str(out_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return _load_reports(out_dir)


@pytest.fixture(scope="module")
def spawn_reports(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("spawn")
    mp.spawn(spawn_entry, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return _load_reports(out_dir)


# ------------------------------------------------------------------ the tests
def test_torchrun_sets_ranks(torchrun_reports):
    assert [r["rank"] for r in torchrun_reports] == list(range(WORLD))
    assert [r["is_main"] for r in torchrun_reports] == [True, False]
    assert all(r["world_size"] == WORLD and r["device"] == "cpu" for r in torchrun_reports)


@pytest.mark.parametrize("launcher", ["torchrun_reports", "spawn_reports"])
def test_gather_detached_rank_order_no_grad(launcher, request):
    reports = request.getfixturevalue(launcher)
    expected = torch.cat([torch.full((r + 1, 3), float(r)) for r in range(WORLD)])
    labels = torch.cat([torch.arange(r + 1) + 10 * r for r in range(WORLD)])
    for report in reports:
        seen = report["check_gather"]
        assert torch.equal(seen["gathered"], expected)
        assert torch.equal(seen["labels"], labels) and seen["labels"].dtype == torch.int64
        assert torch.equal(seen["equal"], torch.tensor([0.0, 0, 1, 1], dtype=torch.float64))
        assert torch.equal(seen["bf16"], torch.tensor([[0.5, 0.5], [1.5, 1.5]],
                                                      dtype=torch.bfloat16))
        assert not seen["gathered_requires_grad"] and not seen["gathered_has_grad_fn"]
        assert "incompatible shapes [(1, 1), (1, 2)]" in seen["mismatch"]


def test_all_reduce_metrics(torchrun_reports):
    for report in torchrun_reports:
        seen = report["check_gather"]
        assert torch.equal(seen["sum"], torch.tensor([2.0, 1.0]))
        assert seen["mean_float"] == pytest.approx(0.5) and isinstance(seen["mean_float"], float)
        assert seen["mean_tensor"].item() == pytest.approx(1.0)


def test_running_sums_cover_every_rank(torchrun_reports):
    expected = {"examples": 8, "seconds": 4.0, "sum_loss": 13.0, "correct_adv": 6,
                "sum_entropy": 1.5, "lr": 0.1, "eps": 0.03}
    for report in torchrun_reports:
        seen = report["check_running_sums"]
        assert seen["total"] == expected and isinstance(seen["total"]["examples"], int)
        assert seen["averages"] == pytest.approx(
            {"loss": 13 / 8, "entropy": 1.5 / 8, "acc_adv": 6 / 8,
             "images_per_s": 8 / 2.0})  # 8 images in a mean of 2 s per rank


def _exactness(torchrun_reports, name=None):
    seen = [r["check_exactness"] for r in torchrun_reports]
    return seen if name is None else [s[name] for s in seen]


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_ddp_gather_gradients_equal_single_process(torchrun_reports, name):
    for seen in _exactness(torchrun_reports, name):
        assert seen["wrapped"]
        torch.testing.assert_close(seen["gather_grads"], seen["ref_grads"],
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_ddp_gather_terms_equal_single_process(torchrun_reports, name):
    for seen in _exactness(torchrun_reports, name):
        assert {"loss", "global_compactness", "global_smoothness"} <= seen["ref_terms"].keys()
        assert seen["gather_terms"].keys() == seen["ref_terms"].keys()
        for term, value in seen["ref_terms"].items():
            torch.testing.assert_close(seen["gather_terms"][term], value, rtol=1e-9,
                                       atol=1e-12, msg=lambda text, t=term: f"{t}: {text}")


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_ddp_without_gather_differs(torchrun_reports, name):
    # the exactness tolerance above is 1e-9; pairing within shards is off by far more
    for seen in _exactness(torchrun_reports, name):
        gap = (seen["local_grads"] - seen["ref_grads"]).abs().max()
        assert gap > 1e-4 * seen["ref_grads"].abs().max()


def test_attack_runs_on_unwrapped_model(torchrun_reports, spawn_reports):
    for seen in _exactness(torchrun_reports):
        assert seen["attack_calls"] >= 6 and not seen["attack_saw_ddp"]
    for report in spawn_reports:
        assert not report["check_batchnorm_two_pass"]["attack_saw_ddp"]


def test_batchnorm_two_passes_keep_replicas_in_sync(spawn_reports):
    first, second = (r["check_batchnorm_two_pass"] for r in spawn_reports)
    assert first["wrapped"] and first["training_restored"]
    assert not torch.allclose(first["params"], first["start"])  # the steps moved them
    torch.testing.assert_close(first["params"], second["params"], rtol=0, atol=1e-7)
    # buffers are not broadcast from rank 0 at each forward: statistics stay rank-local
    assert not torch.allclose(first["stats_before"], second["stats_before"])
    for rank, seen in enumerate((first, second)):
        assert torch.equal(seen["probe"], torch.full_like(seen["probe"], float(rank)))
    mean = (first["stats_before"] + second["stats_before"]) / 2
    for seen in (first, second):
        torch.testing.assert_close(seen["stats_after"], mean)
        assert seen["batches_tracked"] == 4  # two forwards per step, two steps


@pytest.mark.parametrize("launcher", ["torchrun_reports", "spawn_reports"])
def test_cleanup_waits_for_every_rank(launcher, request):
    # leaving the group while a peer still uses it can abort the process at exit
    assert all(report["cleanup_waited"] for report in request.getfixturevalue(launcher))


if __name__ == "__main__":  # the torchrun worker: python -m torch.distributed.run ... FILE OUT
    run_worker([check_gather, check_exactness, check_running_sums], Path(sys.argv[1]))
