"""benchmarks/ablation_study.py's reading of the study: the seed-noise yardstick, the
verdicts against it, the full row's mean over the seeds base and full share, and the runs
it adopts instead of training them again."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from adrnet.config import config_diff, load_config
from adrnet.study import EXECUTION_KEYS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other
    spec = importlib.util.spec_from_file_location(f"{name}_script", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ablation(monkeypatch):
    return load_script("ablation_study", monkeypatch)


def results_with(pgd_by_run: dict) -> dict:
    """Study results holding only PGD-40 accuracies (given in %)."""
    return {name: {"dataset": name.split("_")[0], "summary": {"pgd": value / 100}}
            for name, value in pgd_by_run.items()}


def test_noise_is_the_spread_of_a_difference_of_two_runs(ablation):
    results = results_with({"mnist_base_s0": 90, "mnist_base_s1": 91, "mnist_base_s2": 92,
                            "mnist_full_s0": 88, "mnist_full_s1": 90, "mnist_full_s2": 92})
    # sample variances 1 and 4 points², so sqrt(1 + 4)
    assert ablation.difference_noise(results, "mnist", "pgd") == pytest.approx(math.sqrt(5))
    del results["mnist_full_s2"], results["mnist_full_s1"]
    assert ablation.difference_noise(results, "mnist", "pgd") is None  # one seed: no spread


def test_verdicts_against_twice_the_noise(ablation):
    noise = math.sqrt(5)  # 2σ = 4.47 points for single runs, 2.58 for means of 3 seeds
    assert ablation.verdict(4.0, noise) == "within noise"
    assert ablation.verdict(5.0, noise) == "better, beyond 2σ"
    assert ablation.verdict(-5.0, noise) == "worse, beyond 2σ"
    assert ablation.verdict(-3.0, noise, seeds=3) == "worse, beyond 2σ"
    assert ablation.verdict(-2.5, noise, seeds=3) == "within noise"
    assert ablation.verdict(9.0, None) == "noise not measured yet"


def test_full_row_compares_means_over_the_seeds_both_have(ablation):
    results = results_with({"mnist_base_s0": 90, "mnist_base_s1": 91, "mnist_base_s2": 92,
                            "mnist_full_s0": 88, "mnist_full_s1": 90, "mnist_full_s2": 92})
    rows = {row["variant"]: row for row in ablation.ablation_rows(results, "mnist")}
    full = rows["full"]
    assert full["seeds"] == 3 and full["pgd"] == pytest.approx(90.0)
    assert full["d_pgd"] == pytest.approx(-1.0)  # 90 - 91, inside 2·sqrt(5)/sqrt(3)
    assert full["verdict_pgd"] == "within noise"
    del results["mnist_full_s2"]  # two seeds of each: the means of seeds 0 and 1
    full = next(row for row in ablation.ablation_rows(results, "mnist") if row["variant"] == "full")
    assert full["seeds"] == 2 and full["d_pgd"] == pytest.approx(89.0 - 90.5)
    del results["mnist_base_s1"]  # seed 1 of full has no base to pair with: seed 0 alone
    full = next(row for row in ablation.ablation_rows(results, "mnist") if row["variant"] == "full")
    assert full["seeds"] == 1 and full["d_pgd"] == pytest.approx(88.0 - 90.0)
    variant = next(name for name in rows if name not in ("base", "full"))
    assert "d_pgd" not in rows[variant]  # not run: no difference, no verdict
    assert "d_pgd" not in rows["base"]


def test_adopted_runs_are_the_same_preset_and_seed(ablation, monkeypatch):
    """Each adopted source is trained from the very config the study would train (but how
    it executes), so adopting it changes no figure."""
    sources = {**{f"benchmarks/results/eval_speed/runs/{name}": preset for name, preset
                  in load_script("eval_speed", monkeypatch).PRESETS.items()},
               **{f"benchmarks/results/zoo/runs/{name}": entry[0] for name, entry
                  in load_script("zoo", monkeypatch).ENTRIES.items()}}
    runs = ablation.planned()
    for name, source in ablation.ADOPTED.items():
        study_cfg = ablation.variant_config(runs[name])
        source_cfg = load_config(ablation.ROOT / sources[source])
        assert [k for k in config_diff(study_cfg, source_cfg) if k not in EXECUTION_KEYS] == [], name


def test_adopt_copies_a_finished_run_once_and_never_claims_one_trained_here(ablation, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(ablation, "ROOT", tmp_path)
    monkeypatch.setattr(ablation, "ADOPTED", {"mnist_full_s0": "source"})
    work = tmp_path / "work"
    assert ablation.adopt("mnist_full_s0", work) is None  # no source run: trained here
    checkpoints = tmp_path / "source" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.json").write_text(json.dumps({"epoch": 5}))
    (tmp_path / "source" / ".adrnet.lock").write_text("1234")
    assert ablation.adopt("mnist_full_s0", work) == "source"
    copied = work / "mnist_full_s0" / "mnist_full_s0"
    assert json.loads((copied / "checkpoints" / "last.json").read_text()) == {"epoch": 5}
    assert not (copied / ".adrnet.lock").exists()
    assert ablation.adopt("mnist_full_s0", work) == "source"  # a resumed study: still adopted
    (copied / "checkpoints" / "last.json").write_text(json.dumps({"epoch": 3}))
    assert ablation.adopt("mnist_full_s0", work) is None  # trained here, not the source's
    assert ablation.adopt("fashion_base_s0", work) is None


@pytest.fixture
def doc_files(ablation, tmp_path, monkeypatch):
    """The study's docs and README redirected to scratch copies holding the README's markers."""
    docs, readme = tmp_path / "results.md", tmp_path / "README.md"
    docs.write_text("# Results\n")
    readme.write_text("# adrnet\n<!-- study:start -->\nold\n<!-- study:end -->\n")
    monkeypatch.setattr(ablation, "DOCS", docs)
    monkeypatch.setattr(ablation, "README", readme)
    monkeypatch.setattr(ablation, "IMAGES", tmp_path / "images")
    return docs, readme


def test_docs_name_the_adopted_runs_and_what_is_still_to_come(ablation, doc_files):
    docs, readme = doc_files
    measured = {"machine": "test CPU", "threads": 2, "torch": "x", "dataset": "mnist"}
    summary = {"clean": 0.99, "pgd": 0.9, "n": 10000, "eps": 0.3, "pgd_steps": 40}
    results = {"mnist_base_s0": {**measured, "summary": summary, "adopted_from": None},
               "mnist_full_s0": {**measured, "summary": {**summary, "pgd": 0.92},
                                 "adopted_from": "benchmarks/results/eval_speed/runs/adr_pgd"}}
    ablation.write_docs(results)
    text = docs.read_text()
    assert "(2 of 44 runs done; still to come: mnist_base_s1," in text
    assert "like every run: mnist_full_s0 is benchmarks/results/eval_speed/runs/adr_pgd." in text
    assert "| full | 99.00 | 92.00 | – | +0.00 | +2.00 | – | noise not measured yet /" in text
    assert "has no measured difference yet" in readme.read_text()  # no verdict without noise


def test_the_readme_answer_reads_full_against_base_with_the_measured_noise(ablation, doc_files, tmp_path):
    docs, readme = doc_files
    measured = {"machine": "test CPU", "threads": 2, "torch": "x", "dataset": "mnist", "adopted_from": None}

    def run(pgd):
        return {**measured, "summary": {"clean": 0.99, "pgd": pgd, "n": 10000, "eps": 0.3, "pgd_steps": 40}}
    # base PGD-40 90 and 92 (sd 1.414), full 95 and 95 (sd 0): sigma of a difference 1.414, and
    # full's difference of means +4.0 is beyond 2 sigma / sqrt(2) (2.0)
    results = {"mnist_base_s0": run(0.90), "mnist_base_s1": run(0.92),
               "mnist_full_s0": run(0.95), "mnist_full_s1": run(0.95)}
    ablation.write_docs(results)
    answer = readme.read_text()
    assert ("on MNIST ε=0.3, 1 of 1 variants differ from the base under PGD-40 beyond 2σ of seed noise "
            "(σ from 2 seeds of base and 2 of full): full (+4.0, mean of 2 seeds)") in answer
    assert "figures: [MNIST ε=0.3](docs/images/ablation_mnist.png)). The 4x-budget runs are still to come." in answer
    # the full row's reference is on the table: base's mean over the same seeds, 91
    assert "| base (mean of the same 2 seeds) | 99.00 | 91.00 | – | | | | the reference of full's mean |" \
        in docs.read_text()
    # PGD-AT at the quick budget, 93 and 94: ADR-PGD (full) minus it +2 and +1, mean +1.5,
    # within 2σ/sqrt(2) = 2.0; the budget sentence does not wait for the 4x runs
    results |= {"mnist_pgd_at_s0": run(0.93), "mnist_pgd_at_s1": run(0.94)}
    ablation.write_docs(results)
    assert (" ADR-PGD minus PGD-AT (points, mean of seeds 0 and 1): on MNIST ε=0.3, quick budget PGD-40 "
            "+1.50 (within noise), 4x the epochs still to run.") in readme.read_text()
    assert ("- MNIST ε=0.3, PGD-40, ADR-PGD minus PGD-AT: quick budget: +1.50 (seeds +2.00, +1.00; "
            "within noise); 4x the epochs: still to run") in docs.read_text()
    # at 4x the epochs ADR-PGD 95 and 94 against PGD-AT 90 and 90: +4.5, beyond 2.0
    results |= {"mnist_pgd_at_x4_s0": run(0.90), "mnist_pgd_at_x4_s1": run(0.90),
                "mnist_adr_pgd_x4_s0": run(0.95), "mnist_adr_pgd_x4_s1": run(0.94)}
    ablation.write_docs(results)
    assert ("quick budget PGD-40 +1.50 (within noise), 4x the epochs PGD-40 +4.50 (better, beyond 2σ).") \
        in readme.read_text()
    assert (tmp_path / "images" / "ablation_mnist.png").is_file()
    assert "PGD-40: base 91.00 ± 1.41 (2 seeds); full 95.00 ± 0.00 (2 seeds); σ of a difference: 1.41 points" \
        in docs.read_text()
    # removals from full: without ls 91 (+1 on base's seed 0, within 2σ = 2.83), without lc
    # 95 (+5, beyond): the answer names ls as needed for full's gain, and lc not
    results |= {"mnist_full-ls_s0": run(0.91), "mnist_full-lc_s0": run(0.95)}
    ablation.write_docs(results)
    assert ("2 of 3 variants differ from the base under PGD-40 beyond 2σ of seed noise (σ from 2 seeds of base and 2 "
            "of full): full (+4.0, mean of 2 seeds), full-lc (+5.0); full without ls is back within noise of base "
            "(tables") in readme.read_text()


def test_the_plan_runs_each_variant_once_and_the_budget_at_four_times_the_epochs(ablation):
    runs = ablation.planned()
    # per data set: 3 seeds of base and full, 10 more variants, PGD-AT at 2 seeds, and
    # PGD-AT and ADR-PGD at 4x for 2 seeds each
    assert len(runs) == 2 * (3 * 2 + 10 + 2 + 2 * 2) == 44
    quick = ablation.variant_config(runs["mnist_full_s0"])
    for name in ("mnist_adr_pgd_x4_s1", "mnist_pgd_at_x4_s1"):
        longer = ablation.variant_config(runs[name])
        assert longer.train.epochs == 4 * quick.train.epochs and longer.train.seed == 1
    assert ablation.variant_config(runs["mnist_adr_pgd_x4_s1"]).objective == quick.objective
    assert ablation.variant_config(runs["mnist_pgd_at_x4_s1"]).objective.name == "pgd_at"


def write_metrics(run_dir: Path, epochs: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "step", "epoch": 1, "global_smoothness": -999.0}]  # steps are not epochs
    lines += [{"kind": "epoch", **record} for record in epochs]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_training_record_and_the_epochs_a_run_fell_in(ablation, tmp_path):
    write_metrics(tmp_path, [
        {"epoch": 1, "val_acc_robust": 0.50, "is_best": True, "global_smoothness": 0.2},
        {"epoch": 2, "val_acc_robust": 0.30, "is_best": False, "global_smoothness": -1.0},  # resumed: logged again
        {"epoch": 2, "val_acc_robust": 0.62, "is_best": True, "global_smoothness": -3.5},
        {"epoch": 3, "val_acc_robust": 0.515, "is_best": False, "global_smoothness": -40.0},
        {"epoch": 4, "val_acc_robust": 0.53, "is_best": False, "global_smoothness": 0.1}])
    record = ablation.training_record(tmp_path)
    assert record == {"val_robust": [50.0, 62.0, 51.5, 53.0], "chosen_epoch": 2, "global_smoothness_low": -40.0}
    # 62 - 51.5 = 10.5 points is a fall, 62 - 53 = 9 is not
    assert ablation.falls(record) == [3]
    write_metrics(tmp_path, [{"epoch": 1, "val_acc_robust": 0.5, "is_best": True}])
    assert ablation.training_record(tmp_path)["global_smoothness_low"] is None  # the term is off


def test_a_training_record_comes_only_from_the_run_that_was_evaluated(ablation, tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "ROOT", tmp_path)
    monkeypatch.setattr(ablation, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(ablation, "weights_digest", lambda run_dir, which: f"digest of {run_dir.name}")
    (tmp_path / "results").mkdir()
    work, epoch = tmp_path / "work", [{"epoch": 1, "val_acc_robust": 0.4, "is_best": True}]
    for name in ("mnist_full_s1", "mnist_full_s2"):
        write_metrics(work / name / name, epoch)
        (work / name / name / "checkpoints").mkdir()
        (work / name / name / "checkpoints" / "best.json").write_text("{}")
    write_metrics(tmp_path / "source", [{"epoch": 1, "val_acc_robust": 0.7, "is_best": True}])
    plan = {"which": "best"}
    results = {"mnist_full_s1": {"plan": plan, "weights_sha256": "digest of mnist_full_s1"},
               "mnist_full_s2": {"plan": plan, "weights_sha256": "other weights"},
               "mnist_full_s0": {"plan": plan, "weights_sha256": "x", "adopted_from": "source"},
               "mnist_base_s0": {"plan": plan, "weights_sha256": "x"}}
    ablation.record_training(results, work)
    assert results["mnist_full_s1"]["training"]["val_robust"] == [40.0]
    assert "training" not in results["mnist_full_s2"]  # the directory holds other weights
    assert results["mnist_full_s0"]["training"]["val_robust"] == [70.0]  # from the adopted source
    assert "training" not in results["mnist_base_s0"]  # no directory left
    saved = json.loads((tmp_path / "results" / "mnist_full_s1.json").read_text())
    assert saved["training"]["chosen_epoch"] == 1
    assert sorted(path.stem for path in (tmp_path / "results").iterdir()) == ["mnist_full_s0", "mnist_full_s1"]


def test_the_docs_count_the_runs_that_fell_by_whether_global_smoothness_is_on(ablation, doc_files):
    docs, readme = doc_files
    summary = {"clean": 0.8, "pgd": 0.65, "n": 10000, "eps": 0.1, "pgd_steps": 40}
    config = {"eval": {"val_steps": 20, "val_size": 1000}}

    def run(val_robust, chosen, low):
        return {"machine": "test CPU", "threads": 2, "torch": "x", "dataset": "fashion", "adopted_from": None,
                "summary": summary, "config": config,
                "training": {"val_robust": val_robust, "chosen_epoch": chosen, "global_smoothness_low": low}}
    results = {"fashion_full_s0": run([50.0, 62.0, 40.0], 2, -207.0),         # gs on, fell in epoch 3
               "fashion_base+gs_s0": run([50.0, 60.0, 55.0], 2, -1.5),         # gs on, 5 points: no fall
               "fashion_full-gs_s0": run([50.0, 66.0, 67.0], 3, None),         # gs off
               "fashion_base_s0": run([50.0, 65.0, 66.0], 3, None)}            # gs off
    results["fashion_base_s1"] = {key: value for key, value in run([], 1, None).items() if key != "training"}
    ablation.write_docs(results)
    text = docs.read_text()
    assert ("- 1 of 2 Fashion-MNIST ε=0.1 runs with global smoothness on (0 of 2 with it off) "
            "(no record: fashion_base_s1, whose run directory is gone)") in text
    assert "| fashion_full_s0 | 3 | 2 | 62.0 | 40.0 | 3 | -207 |" in text
    assert "| fashion_base+gs_s0 |" not in text.split("#### Training stability")[1]
    assert ("During training, validation PGD accuracy fell more than 10 points below its best so far in 1 of 2 "
            "Fashion-MNIST ε=0.1 runs with global smoothness on (0 of 2 with it off); every figure is of the "
            "checkpoint chosen on validation.") in readme.read_text()


def test_the_answer_says_when_every_planned_run_is_in(ablation, doc_files):
    docs, readme = doc_files
    summary = {"clean": 0.9, "pgd": 0.8, "n": 10000, "eps": 0.3, "pgd_steps": 40}
    results = {name: {"machine": "test CPU", "threads": 2, "torch": "x", "dataset": name.split("_")[0],
                      "adopted_from": None, "summary": summary} for name in ablation.planned()}
    ablation.write_docs(results)
    assert "The component study at the quick budget (all 44 runs) found:" in readme.read_text()
    assert "(44 of 44 runs done; still to come: none)" in docs.read_text()
