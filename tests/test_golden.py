"""Golden values of tiny deterministic runs: a refactor that claims to change nothing
must keep them.

Each entry is one epoch (8 steps) of the blobs MLP run of tests/_train_helpers.py under
one objective: the last step's loss and terms as logged, and two checksums of the final
weights (sum and sum of squares, in float64). They were recorded before the issue-8
restructure (benchmarks/golden.py checks the same runs bit for bit on one CPU); the
tolerance is relative 1e-6 because another CPU or BLAS may round the last bits
differently.
"""

import pytest

from _train_helpers import records, tiny_config, weights, write_config
from adrnet.cli import main

#: objective -> (last step record, sum of the weights, sum of their squares)
GOLDEN = {
    "pgd_at": (
        {"loss": 1.016838788986206,
         "ce_adv": 1.016838788986206,
         "acc_adv": 0.71875},
        -2.924950289539993, 18.364713432879626),
    "trades": (
        {"loss": 0.9814783334732056,
         "ce_clean": 0.9798223376274109,
         "trades_kl": 0.0002759971539489925,
         "acc_clean": 0.65625,
         "acc_adv": 0.65625},
        -2.6135471696034074, 18.79961136129007),
    "adr_pgd": (
        {"loss": 4.52662467956543,
         "ce_clean": 0.9936580657958984,
         "ce_adv": 1.0084881782531738,
         "local_compactness": 0.00687827542424202,
         "local_smoothness": 1.077234148979187,
         "global_compactness": 0.005072928965091705,
         "global_smoothness": 0.35683315992355347,
         "entropy": 1.0784599781036377,
         "acc_clean": 0.59375,
         "acc_adv": 0.53125},
        -2.1538524539209902, 18.74885927772006),
    "adr_trades": (
        {"loss": 3.310471296310425,
         "ce_clean": 1.066472053527832,
         "trades_kl": 0.00023781851632520556,
         "local_compactness": 0.007609127555042505,
         "local_smoothness": 0.9576526880264282,
         "global_compactness": 0.004298670217394829,
         "global_smoothness": 0.3158594071865082,
         "entropy": 0.958341658115387,
         "acc_clean": 0.375,
         "acc_adv": 0.375},
        -2.1354619981721044, 18.96086556418277),
    "mart": (
        {"loss": 1.4474860429763794,
         "mart_bce": 1.4472893476486206,
         "mart_kl": 3.2775209547253326e-05,
         "acc_clean": 1.0,
         "acc_adv": 0.96875},
        -3.0525372843258083, 17.702565705992615),
}


@pytest.mark.parametrize("objective", sorted(GOLDEN))
def test_tiny_run_matches_its_golden_values(tmp_path, objective):
    config = write_config(tmp_path / "tiny.toml", tiny_config(
        objective={"name": objective}, train={"epochs": 1, "log_every": 1}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    expected_step, expected_sum, expected_sq = GOLDEN[objective]
    last = records(tmp_path / "run", "step")[-1]
    assert last["global_step"] == 8
    logged = {key: last[key] for key in expected_step}
    assert logged == pytest.approx(expected_step, rel=1e-6)
    final = [tensor.double() for tensor in weights(tmp_path / "run").values()]
    assert sum(float(t.sum()) for t in final) == pytest.approx(expected_sum, rel=1e-6)
    assert sum(float(t.square().sum()) for t in final) == pytest.approx(expected_sq, rel=1e-6)
