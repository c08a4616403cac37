"""benchmarks/quality.py's recipe rule: the candidate chosen on validation decides the
target, and the verdict follows the target's two conditions (AutoAttack >= 92% on 1000
images, at most 30 minutes of training)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry(preset: str, autoattack: float | None, train_seconds: float, eps: float = 0.3) -> dict:
    summary = {"clean": 0.99, "pgd": 0.95, "eps": eps}
    if autoattack is not None:
        summary.update(autoattack=autoattack, autoattack_n=1000)
    return {"preset": preset, "summary": summary, "train_seconds": train_seconds, "threads": 2}


def scored(quality, best: str) -> dict:
    """Validation scores of every candidate, ``best`` ahead of the others."""
    return {name: {"apgd_ce": 0.93 if name == best else 0.90} for name in quality.RECIPE_CANDIDATES}


def test_no_choice_until_every_candidate_is_scored(quality):
    first, second, *_ = quality.RECIPE_CANDIDATES
    scores = scored(quality, second)
    del scores[first]
    assert quality.chosen_recipe(scores) is None
    assert "not decided" in quality.recipe({}, scores)
    scores[first] = {"apgd_ce": 0.92}
    assert quality.chosen_recipe(scores) == second
    scores[first]["apgd_ce"] = 0.97
    assert quality.chosen_recipe(scores) == first


@pytest.mark.parametrize("autoattack, minutes, eps, verdict", [
    (0.925, 29.0, 0.3, "met: 0.6 standard errors above"),   # se = sqrt(.925 * .075 / 1000) = 0.833 points
    (0.925, 31.0, 0.3, "missed: 0.6 standard errors above"),  # over the time budget
    (0.925, 29.0, 0.2, "missed: 0.6 standard errors above"),  # evaluated at a smaller radius
    (0.910, 25.0, 0.3, "missed: 1.1 standard errors below"),  # se = 0.905 points
])
def test_the_chosen_candidate_decides_the_target(quality, autoattack, minutes, eps, verdict):
    first, second, *_ = quality.RECIPE_CANDIDATES
    scores = scored(quality, second)
    results = {first: entry("configs/a.toml", 0.99, 60.0),  # not chosen: its figure never counts
               second: entry("configs/b.toml", autoattack, 60.0 * minutes, eps)}
    line = quality.recipe(results, scores)
    assert f"{second} (`b.toml`), chosen on validation" in line and verdict in line


def test_the_chosen_candidate_without_autoattack_is_pending(quality):
    first, second, *_ = quality.RECIPE_CANDIDATES
    scores = scored(quality, first)
    results = {first: {**entry("configs/a.toml", None, 60.0), "partial": True}}
    assert "still to come" in quality.recipe(results, scores)
    assert quality.autoattack_cell(first, results[first], scores) == "pending"
    assert quality.autoattack_cell(second, results[first], scores).startswith("not run")
    assert quality.autoattack_cell("mnist_pgd_at_s1", results[first], scores) == "pending"  # no candidate


def test_the_recipe_line_gives_the_accuracy_after_each_attack(quality):
    chosen = quality.RECIPE_CANDIDATES[1]
    results = {chosen: entry("configs/b.toml", 0.916, 60.0 * 25)}
    results[chosen]["summary"]["autoattack_after"] = {"apgd-ce": 0.928, "square": 0.916}
    line = quality.recipe(results, scored(quality, chosen))
    assert line.endswith("accuracy after each attack: apgd-ce 92.80%, square 91.60%.")


def test_stages_are_added_only_from_the_same_evaluation(quality, tmp_path, monkeypatch):
    """A summary saved without ``autoattack_after`` gets it from its run directory, but
    only from an AutoAttack record of the same weights and number of images."""
    import json
    monkeypatch.setattr(quality, "RESULTS", tmp_path / "results")
    quality.RESULTS.mkdir()
    name, run_dir = "mnist_recipe_s0", tmp_path / "work" / "mnist_recipe_s0" / "mnist_recipe_s0"
    run_dir.mkdir(parents=True)
    stages = {"apgd-ce": 0.93, "square": 0.91}

    def backfilled(weights: str, n: int) -> dict:
        (run_dir / "eval_autoattack.json").write_text(json.dumps({
            "weights_sha256": weights, "n": n, "autoattack": {"accuracy_after": stages}}))
        (quality.RESULTS / f"{name}.json").write_text(json.dumps(
            {"weights_sha256": "w1", "summary": {"autoattack": 0.91, "autoattack_n": 1000}}))
        quality.record_autoattack_stages(name, tmp_path / "work")
        return json.loads((quality.RESULTS / f"{name}.json").read_text())["summary"]

    assert "autoattack_after" not in backfilled("w2", 1000)  # other weights
    assert "autoattack_after" not in backfilled("w1", 500)  # other images
    assert backfilled("w1", 1000)["autoattack_after"] == stages


def test_a_saved_preset_must_equal_the_config_measured(quality, monkeypatch):
    """The docs send users to the one-file preset only while it is the config that was
    measured (the row's preset plus overrides)."""
    for name, path in quality.SAVED_AS.items():
        assert quality.saved_as(name) == path
    name = next(iter(quality.SAVED_AS))
    monkeypatch.setitem(quality.SAVED_AS, name, "configs/mnist_recipe.toml")  # PGD-10, not PGD-5
    with pytest.raises(SystemExit, match="attack.steps"):
        quality.saved_as(name)


def test_the_readme_names_the_recipe_once_its_autoattack_is_done(quality):
    chosen = quality.RECIPE_CANDIDATES[1]
    demo = {**entry("configs/mnist_quick_adr.toml", 0.866, 60.0 * 19), "machine": "CPU X"}
    demo["summary"]["autoattack_n"] = 500
    results = {"mnist_adr_pgd_s0": demo, chosen: {**entry("configs/b.toml", None, 60.0 * 25), "partial": True}}
    scores = scored(quality, chosen)
    assert "recipe" not in quality.headline(results, scores)
    results[chosen] = {**entry("configs/b.toml", 0.923, 60.0 * 25), "overrides": ["train.epochs=22"]}
    line = quality.headline(results, scores)
    assert line.startswith("Measured by `python benchmarks/quality.py` (CPU X): the demo preset, **86.60% under")
    assert (f"The 30-minute MNIST recipe, chosen on validation among {len(quality.RECIPE_CANDIDATES)} "
            "candidates (`b.toml` train.epochs=22): **92.30% under AutoAttack** (standard, L∞ ε = 0.3, "
            "first 1000 test images), 95.00% under PGD-40 and 99.00% clean") in line


def test_the_recipe_line_adds_the_second_seed_without_changing_the_verdict(quality):
    chosen = "mnist_recipe_overshoot_pgd5_s0"
    assert chosen in quality.RECIPE_CANDIDATES and "mnist_recipe_overshoot_pgd5_s1" in quality.RUNS
    results = {chosen: entry("configs/b.toml", 0.923, 60.0 * 25),
               "mnist_recipe_overshoot_pgd5_s1": {**entry("configs/b.toml", None, 60.0 * 26), "partial": True}}
    line = quality.recipe(results, scored(quality, chosen))
    assert "met: 0.4 standard errors above" in line  # se = sqrt(.923 * .077 / 1000) = 0.843 points
    assert line.endswith("; the same config with seed 1: PGD-40 95.00%, its AutoAttack still to come.")
    results["mnist_recipe_overshoot_pgd5_s1"] = entry("configs/b.toml", 0.915, 60.0 * 26)
    line = quality.recipe(results, scored(quality, chosen))
    assert "met: 0.4 standard errors above" in line
    assert line.endswith("; the same config with seed 1: 91.50% under AutoAttack (n = 1000) after 26.0 min "
                         "of training steps.")
