"""`adrnet ablate` end to end on toy data: the runs, the table's values, resumption."""

import csv
import json

import pytest

from _train_helpers import tiny_config, write_config
from adrnet.cli import main
from adrnet.config import config_diff, config_from_dict
from adrnet.objectives import objective_from_config
from adrnet.study import ablation_variants

pytestmark = pytest.mark.usefixtures("torch_one_thread")
EXPECTED_RUNS = ["base", "full", "base+lc", "base+ls", "base+gc", "base+gs", "base+H",
                 "full-lc", "full-ls", "full-gc", "full-gs", "full-H"]
ADR = ("local_compactness", "local_smoothness", "global_compactness", "global_smoothness", "entropy")


def _config(tmp_path):
    raw = tiny_config(train={"epochs": 2}, objective={"name": "adr_pgd", "weights": {"entropy": 0.5}})
    return write_config(tmp_path / "toy_adr.toml", raw), raw


def test_variants_change_only_the_adr_weights(tmp_path):
    _, raw = _config(tmp_path)
    variants = ablation_variants(config_from_dict(raw))
    assert list(variants) == EXPECTED_RUNS
    weights = {name: {**cfg.objective.weights} for name, cfg in variants.items()}
    assert all(weights["base"][t] == 0 for t in ADR)
    # the weights each run trains with (what the objective makes of its config), exactly
    active = {name: objective_from_config(cfg).active for name, cfg in variants.items()}
    ce = {"ce_clean": 1.0, "ce_adv": 1.0}
    full = {**ce, **{t: 1.0 for t in ADR}, "entropy": 0.5}
    assert active["full"] == full
    assert active["base"] == ce
    assert active["base+H"] == {**ce, "entropy": 0.5}  # a component keeps the weight full ADR gives it
    assert active["base+lc"] == {**ce, "local_compactness": 1.0}
    assert active["full-gc"] == {k: w for k, w in full.items() if k != "global_compactness"}
    assert active["full-H"] == {k: w for k, w in full.items() if k != "entropy"}
    for name, cfg in variants.items():  # same seed, data, model, budget and attack everywhere
        assert set(config_diff(variants["full"], cfg)) <= {"objective.weights"}, name
        assert (name == "full") == (config_diff(variants["full"], cfg) == []), name


def test_a_config_without_adr_terms_is_refused(tmp_path, capsys):
    raw = tiny_config(objective={"name": "pgd_at"})
    path = write_config(tmp_path / "pgd.toml", raw)
    assert main(["ablate", "--config", str(path), "--dry-run"]) == 2
    assert "no ADR term" in capsys.readouterr().err


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, capsys):
    path, _ = _config(tmp_path)
    out = tmp_path / "study"
    assert main(["ablate", "--config", str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "12 runs" in text and all(f"\n{name} " in "\n" + text for name in EXPECTED_RUNS)
    assert not out.exists()


def test_ablate_end_to_end_table_matches_each_runs_eval(tmp_path, capsys, monkeypatch):
    path, _ = _config(tmp_path)
    out = tmp_path / "study"
    args = ["ablate", "--config", str(path), "--out", str(out), "--pgd-steps", "3",
            "--aa-n", "4", "--aa-version", "custom", "--aa-attacks", "apgd-ce",
            "--no-progress", "--no-diagnostics"]  # standard AutoAttack needs 4+ classes
    assert main(args) == 0
    rows = {r["run"]: r for r in csv.DictReader(open(out / "ablation.csv"))}
    assert list(rows) == EXPECTED_RUNS
    for name in EXPECTED_RUNS:
        pgd = json.loads((out / name / "eval.json").read_text())
        aa = json.loads((out / name / "eval_autoattack.json").read_text())
        assert pgd["split"] == "test" and pgd["which"] == "best" and aa["n"] == 4
        assert float(rows[name]["clean"]) == pgd["clean_accuracy"]
        assert float(rows[name]["pgd"]) == pgd["attack_accuracy"]["pgd-3"]
        assert float(rows[name]["autoattack"]) == aa["attack_accuracy"]["autoattack"]
        for ref in ("base", "full"):
            expected = round(100 * (pgd["attack_accuracy"]["pgd-3"] - float(rows[ref]["pgd"])), 2)
            assert float(rows[name][f"d_pgd_vs_{ref}"]) == pytest.approx(expected)
    assert float(rows["base"]["d_clean_vs_base"]) == 0.0
    markdown = (out / "ablation.md").read_text()
    assert sum(line.startswith("| ") for line in markdown.splitlines()) == 1 + len(EXPECTED_RUNS)
    assert (out / "report.html").exists()
    capsys.readouterr()

    # a second run retrains and re-evaluates nothing
    def forbidden(*a, **k):
        raise AssertionError("a finished evaluation was redone")
    monkeypatch.setattr("adrnet.eval.evaluate.evaluate_run", forbidden)
    before = {name: (out / name / "checkpoints" / "last.safetensors").stat().st_mtime_ns
              for name in EXPECTED_RUNS}
    assert main(args) == 0
    assert "evaluated already" in capsys.readouterr().out
    assert before == {name: (out / name / "checkpoints" / "last.safetensors").stat().st_mtime_ns
                      for name in EXPECTED_RUNS}


def test_a_study_directory_in_use_is_refused_naming_its_process(tmp_path, capsys):
    import os
    from adrnet.locking import run_lock
    path, _ = _config(tmp_path)
    out = tmp_path / "study"
    with run_lock(out):
        assert main(["ablate", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(os.getpid()) in err
    assert not (out / "base").exists()  # nothing was trained


def test_an_evaluation_on_disk_for_the_same_weights_is_reused(tmp_path, monkeypatch):
    """A study stopped during AutoAttack keeps its finished PGD evaluation: a rerun whose
    study.json lost the entry reuses eval.json (same weights) instead of attacking again."""
    from adrnet.study import EvalPlan, run_study
    _, raw = _config(tmp_path)
    variants = {"full": config_from_dict(raw)}
    plan = EvalPlan(pgd_steps=3, autoattack_n=4, autoattack_version="custom",
                    autoattack_attacks=("apgd-ce",), progress=False, diagnostics=False)
    first = run_study(variants, tmp_path / "s", plan)["full"]["summary"]
    assert first["autoattack_after"] == {"apgd-ce": first["autoattack"]}  # its only attack
    (tmp_path / "s" / "study.json").unlink()
    monkeypatch.setattr("adrnet.eval.evaluate.evaluate_run", lambda *a, **k: 1 / 0)
    assert run_study(variants, tmp_path / "s", plan)["full"]["summary"] == first
    other = EvalPlan(pgd_steps=4, autoattack_n=0, progress=False, diagnostics=False)
    with pytest.raises(ZeroDivisionError):  # other PGD settings: evaluated again
        run_study(variants, tmp_path / "s", other)
