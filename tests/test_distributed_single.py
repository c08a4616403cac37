"""adrnet.train.distributed in one process, and the launch mistakes it reports.

Why: the training loop calls the distributed helpers unconditionally, so without
torchrun they must be exact no-ops (a plain ``adrnet train`` of ADR, PGD-AT or
TRADES must not change); and a wrong launch environment or device must give a
ConfigError saying what to do, not a hang or a traceback from torch.distributed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adrnet.errors import ConfigError
from adrnet.train import distributed as D


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_is_a_noop(clean_env):
    info = D.setup_distributed("cpu")
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert info.device == torch.device("cpu") and not info.distributed
    model = nn.Linear(3, 2)
    assert D.wrap_ddp(model, info) is model and D.unwrap(model) is model
    leaf = torch.ones(2, 3, requires_grad=True)
    gathered = D.gather_detached(leaf * 2)
    assert torch.equal(gathered, torch.full((2, 3), 2.0)) and not gathered.requires_grad
    assert D.all_reduce_mean(1.5) == 1.5
    summed = D.all_reduce_sum(leaf)
    assert torch.equal(summed, leaf.detach()) and summed is not leaf
    D.barrier()
    D.cleanup()


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "two"}, "not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "inconsistent"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "MASTER_ADDR"),
])
def test_bad_launch_environment_is_a_config_error(clean_env, env, match):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=match):
        D.setup_distributed("cpu")


def test_bad_device_is_a_config_error(clean_env):
    with pytest.raises(ConfigError, match="unknown"):
        D.setup_distributed("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            D.setup_distributed("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_every_spelling_of_a_gpu_is_resolved_or_refused_plainly(name):
    """resolve_device is the one reader of a device name (training and `adrnet eval`)."""
    from adrnet.device import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(name)
    elif name != "cuda:1" or torch.cuda.device_count() > 1:
        assert resolve_device(name).type == "cuda"
    with pytest.raises(ConfigError, match="unknown"):
        resolve_device("gpu")


def test_drain_waits_until_the_backend_lets_go_of_its_tensor(monkeypatch):
    """``cleanup``'s last collective returns only once the backend's thread released the
    tensor (a release during interpreter shutdown aborts the process). A stand-in
    all-reduce hands the tensor to a thread that holds it for 0.2 s, through a view: as a
    C++ holder does, a view raises the tensor's use count."""
    import threading
    import time
    released = []

    def hold(view, seconds):
        time.sleep(seconds)
        released.append(view.shape)

    holders = []

    def all_reduce(tensor):
        holders.append(threading.Thread(target=hold, args=(tensor.view(1), 0.2)))
        holders[-1].start()

    monkeypatch.setattr(D.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(D, "_collective_device", lambda: torch.device("cpu"))
    D._drain()
    assert released  # it waited for the holder
    released.clear()
    with pytest.warns(RuntimeWarning, match="still held"):
        D._drain(patience_s=0.05)  # less patience than the hold: it gives up, not hangs
    assert not released
    holders[-1].join()
