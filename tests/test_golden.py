"""Golden values of tiny deterministic runs in fp64: a change that claims to change no
number must keep them, on any CPU.

Each entry is one epoch (8 steps) of the blobs MLP run of tests/_train_helpers.py under
one objective with ``train.precision = "fp64"`` (weights initialised in fp64) and SGD
with momentum (Adam divides by the root of the squared gradient, which would magnify a
gradient component that is zero up to rounding into a visible step): the last
step's loss and terms as logged, and three checksums of the final weights (their sum, the
sum of their squares and the sum of their absolute values).

Why fp64 and these tolerances: fp32 kernels round the last bits differently on each CPU
(and under ``ATEN_CPU_CAPABILITY=default``), and small terms computed by cancellation (a
KL of 1e-5 from log-probabilities of size 1) amplify that to relative 1e-5. In fp64 the
same runs agree to 2.2e-16 absolute on every term, and on the weight sum to 9e-17 of the
sum of |w|, across the kernel paths of one machine (measured on an AMD EPYC: default,
``ATEN_CPU_CAPABILITY=default`` and ``avx2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2
ONEDNN_MAX_CPU_ISA=AVX2``; the initial weights agree too, being drawn in fp64). A value is therefore
compared against the size of its operands, not its own size: TOLERANCE x 1 for a loss
term (its operands, log-probabilities and latents, are of size 1) and TOLERANCE x the
sum of |w| for the weight sum (a sum of signed numbers). TOLERANCE = 1e-12 leaves a
margin of 4000 over what the kernels differ by, yet a term changed by a factor 1 + 1e-6
moves its logged value by more than that (the smallest term here is 2.8e-6).

Bit-exact fingerprints of the fp32/bf16 paths belong to ``benchmarks/golden.py``, which
compares a change on one machine before and after.

Record again (only after a change meant to change the numbers):
``python tests/test_golden.py`` prints GOLDEN.
"""

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import torch

from _train_helpers import records, tiny_config, weights, write_config
from adrnet.cli import main

TOLERANCE = 1e-12

#: objective -> last step record (floats), and checksums of the final weights
GOLDEN = {
    "pgd_at": {
        "step": {
            "loss": 1.0851724949755455,
            "ce_adv": 1.0851724949755455,
            "acc_adv": 0.65625,
        },
        "weight_sum": 1.3250252456504161,
        "weight_square_sum": 14.417740261721354,
        "weight_abs_sum": 56.0936458961133,
    },
    "trades": {
        "step": {
            "loss": 1.0811559802657935,
            "ce_clean": 1.0811114775323116,
            "trades_kl": 7.417122246972379e-06,
            "acc_clean": 0.65625,
            "acc_adv": 0.59375,
        },
        "weight_sum": 1.3859824750180871,
        "weight_square_sum": 14.449456332451897,
        "weight_abs_sum": 56.191131682733115,
    },
    "adr_pgd": {
        "step": {
            "loss": 4.712425585236782,
            "ce_clean": 1.073709695178657,
            "ce_adv": 1.0786281082014948,
            "local_compactness": 0.0025831913578980388,
            "local_smoothness": 1.096183201224116,
            "global_compactness": 0.00196356044969202,
            "global_smoothness": 0.3630962313996492,
            "entropy": 1.096261597425275,
            "acc_clean": 0.59375,
            "acc_adv": 0.53125,
        },
        "weight_sum": 1.1736672932229668,
        "weight_square_sum": 14.740463700580914,
        "weight_abs_sum": 57.03023173588937,
    },
    "adr_trades": {
        "step": {
            "loss": 3.650385387776929,
            "ce_clean": 1.0954127341255928,
            "trades_kl": 5.7574443716371495e-06,
            "local_compactness": 0.0021720379128554383,
            "local_smoothness": 1.0943525171486574,
            "global_compactness": 0.0016012371492405563,
            "global_smoothness": 0.3624848535030503,
            "entropy": 1.0943562504931603,
            "acc_clean": 0.28125,
            "acc_adv": 0.28125,
        },
        "weight_sum": 1.1231103823098891,
        "weight_square_sum": 14.407572094359107,
        "weight_abs_sum": 56.169924977200644,
    },
    "mart": {
        "step": {
            "loss": 1.4995623789609092,
            "mart_bce": 1.4995452104663693,
            "mart_kl": 2.8614157566417497e-06,
            "acc_clean": 0.34375,
            "acc_adv": 0.34375,
        },
        "weight_sum": 0.9712048927981907,
        "weight_square_sum": 14.386853626023687,
        "weight_abs_sum": 56.09437349582908,
    },
    "adr_mart": {
        "step": {
            "loss": 4.069217841516187,
            "mart_bce": 1.5069973859273982,
            "mart_kl": 2.8368699143539215e-06,
            "local_compactness": 0.0020758461814364172,
            "local_smoothness": 1.0975445783091076,
            "global_compactness": 0.0015045133379562197,
            "global_smoothness": 0.36353546236423284,
            "entropy": 1.0975430341765695,
            "acc_clean": 0.375,
            "acc_adv": 0.34375,
        },
        "weight_sum": 0.8611571638991475,
        "weight_square_sum": 14.460095941647854,
        "weight_abs_sum": 56.39962163391239,
    },
}


def run_tiny(objective: str, folder: Path) -> dict:
    """The golden quantities of the tiny fp64 run of ``objective`` trained in ``folder``."""
    config = write_config(folder / "tiny.toml", tiny_config(
        objective={"name": objective}, optim={"name": "sgd", "lr": 0.1, "momentum": 0.9},
        train={"epochs": 1, "log_every": 1, "precision": "fp64"}))
    assert main(["train", "--config", str(config), "--out", str(folder / "run"),
                 "--no-progress"]) == 0
    last = records(folder / "run", "step")[-1]
    assert last["global_step"] == 8
    final = list(weights(folder / "run").values())
    assert all(t.dtype == torch.float64 for t in final)
    return {"step": {k: v for k, v in last.items()
                     if isinstance(v, float) and k not in ("lr", "eps", "time_s", "images_per_s")},
            "weight_sum": sum(float(t.sum()) for t in final),
            "weight_square_sum": sum(float(t.square().sum()) for t in final),
            "weight_abs_sum": sum(float(t.abs().sum()) for t in final)}


@pytest.mark.parametrize("objective", sorted(GOLDEN))
def test_tiny_fp64_run_matches_its_golden_values(tmp_path, objective):
    expected, found = GOLDEN[objective], run_tiny(objective, tmp_path)
    assert found["step"].keys() == expected["step"].keys()
    for key, value in expected["step"].items():
        assert abs(found["step"][key] - value) <= TOLERANCE * max(1.0, abs(value)), key
    assert abs(found["weight_sum"] - expected["weight_sum"]) <= (
        TOLERANCE * expected["weight_abs_sum"])
    for key in ("weight_square_sum", "weight_abs_sum"):  # sums of non-negative numbers
        assert found[key] == pytest.approx(expected[key], rel=TOLERANCE, abs=0), key


if __name__ == "__main__":
    print("GOLDEN = {")
    for name in ("pgd_at", "trades", "adr_pgd", "adr_trades", "mart", "adr_mart"):
        with contextlib.redirect_stdout(io.StringIO()):
            found = run_tiny(name, Path(tempfile.mkdtemp()))
        print(f"    {name!r}: {found!r},")  # reformat by hand (black-style) when pasting
    print("}")
