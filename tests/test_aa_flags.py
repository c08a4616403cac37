"""AutoAttack's own reliability flag reaches every figure it concerns (issue 22, item 12),
and `adrnet eval` runs the follow-up it recommends: a stronger Square (`square`).

pyautoattack checks, after its attacks, whether Square (black-box) broke points the
gradient attacks missed, and warns that the evaluation might be unreliable. adrnet runs
the package one attack at a time (for its resumable state), so that check never fired:
the recipe's 92.30% (Square 0.80 points below FAB-T) was printed without it. The masked
model here (inputs rounded to 0 or 1: zero input gradient) is the textbook case: APGD
finds nothing, Square breaks points, and only the stronger Square shows how many.
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest
import torch
from pyautoattack import checks

import adrnet.attacks.autoattack as aa_module
from _masking import QuantizedInput
from adrnet.attacks import ATTACKS, make_threat
from adrnet.attacks.autoattack import autoattack_eval
from adrnet.cli import main
from adrnet.eval.evaluate import evaluate_model
from adrnet.report import format_eval

pytestmark = pytest.mark.usefixtures("torch_one_thread")
EPS = 0.2  # crosses the rounding threshold 0.5 for pixels within 0.2 of it
#: how pyautoattack's Square warning begins (checks.check_square_sr)
SQUARE_FLAG_START = "Square Attack has decreased the robust accuracy of"


@pytest.fixture(scope="module")
def masked(tiny_trained_model):
    """(model, x, y): the tiny model behind 2-level input rounding, 16 clean-correct examples."""
    model, x, y = tiny_trained_model
    return QuantizedInput(model, levels=2).eval(), x[:16], y[:16]


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def package_says(accuracy_after: dict) -> str | None:
    """What pyautoattack's own check (checks.check_square_sr) says about these accuracies,
    as it sees them in one run of all attacks (clean accuracy first)."""
    logger, kept = logging.getLogger("adrnet.test.square_sr"), _Kept()
    logger.handlers, logger.propagate = [kept], False
    checks.check_square_sr({"clean": 1.0, **accuracy_after}, logger=logger)
    return kept.messages[0] if kept.messages else None


@pytest.mark.parametrize("after", [
    # the recipe (mnist_recipe_overshoot_pgd5_s0): Square 0.80 points below FAB-T
    {"apgd-ce": 0.938, "apgd-t": 0.933, "fab-t": 0.931, "square": 0.923},
    # its second seed: 0.70 points
    {"apgd-ce": 0.929, "apgd-t": 0.924, "fab-t": 0.924, "square": 0.917},
    # the demo preset, float32 as eval.json holds it: 1 image in 500 (= the margin) is no flag
    {"apgd-ce": 0.8679999709129333, "apgd-t": 0.8679999709129333, "fab-t": 0.8679999709129333,
     "square": 0.8659999966621399},
    {"apgd-ce": 0.95, "apgd-t": 0.94, "fab-t": 0.94, "square": 0.94},   # Square found nothing
    {"apgd-ce": 0.9, "square": 0.5},                                       # custom: two attacks
    {"apgd-ce": 0.9, "square": 0.8, "apgd-t": 0.7, "fab-t": 0.7},          # plus order: Square early
    {"square": 0.5},                                                        # Square alone
])
def test_square_flag_is_pyautoattacks_own_check(after):
    """adrnet's check fires exactly when the package's would on one run of these attacks,
    with the same drop in its first sentence."""
    from adrnet.attacks.autoattack import square_flag
    ours, theirs = square_flag(after), package_says(after)
    assert (ours is None) == (theirs is None)
    if theirs is not None:
        drop = re.search(r"of (\d+\.\d+%)", theirs).group(1)
        assert ours.startswith(f"{SQUARE_FLAG_START} {drop} (")
        assert "might indicate that the robustness evaluation using AutoAttack is unreliable" in ours
        assert "--square-queries" in ours and "--square-restarts" in ours  # the follow-up, named


def test_a_damaged_accuracy_table_raises_no_flag_and_no_error():
    from adrnet.attacks.autoattack import square_flag
    for damaged in (None, [1, 2], "x", {"square": "0.5", "apgd-ce": 0.9}, {"square": 0.5, "apgd-ce": 7}):
        assert square_flag(damaged) is None


def test_autoattack_flags_square_breaking_what_the_gradient_attack_missed(masked):
    """The real package on a masked model: APGD-CE breaks nothing, Square 3 of 16; the
    evaluation's warnings carry the flag with that drop (before: no warning at all)."""
    model, x, y = masked
    result = autoattack_eval(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce", "square"],
                             square_queries=30, batch_size=16)
    after = result.accuracy_after
    assert after["apgd-ce"] == float(result.clean_correct.float().mean())  # the premise: masked
    assert after["square"] < after["apgd-ce"] - 0.002
    drop = after["apgd-ce"] - after["square"]
    flags = [w for w in result.warnings if w.startswith(SQUARE_FLAG_START)]
    assert len(flags) == 1, result.warnings
    assert flags == [f"{SQUARE_FLAG_START} {drop:.2%} ({after['apgd-ce']:.2%} after apgd-ce, "
                     f"{after['square']:.2%} after square). " + flags[0].split("). ", 1)[1]]


def test_the_square_budget_reaches_the_package(masked, monkeypatch):
    """--square-queries / --square-restarts are the package Square's n_queries / n_restarts."""
    from pyautoattack.square import SquareAttack
    model, x, y = masked
    seen, perturb = [], SquareAttack.perturb

    def recording(self, *args, **kwargs):
        seen.append((self.n_queries, self.n_restarts))
        return perturb(self, *args, **kwargs)
    monkeypatch.setattr(SquareAttack, "perturb", recording)
    spec, threat = ATTACKS["square"], make_threat("linf", EPS)
    options = spec.options(square_queries=7, square_restarts=3)
    run = spec.evaluate(model, x[:4], y[:4], threat, device="cpu", batch_size=4, progress=False, **options)
    assert seen and set(seen) == {(7, 3)}
    assert spec.label(options) == "square-7x3" and spec.label(spec.options(square_restarts=1)) == "square-10000"
    assert (run.settings["square_queries"], run.settings["square_restarts"]) == (7, 3)
    assert run.settings["attacks"] == ["square"]


def test_pgd_restarts_never_reach_the_square_attack():
    """--restarts is PGD's; the square attack keeps its own budget unless --square-* say."""
    from adrnet.eval.evaluate import EvalOptions, attack_options
    chosen = attack_options(EvalOptions(attacks=("pgd", "square"), restarts=5, steps=10))
    assert chosen["pgd"]["restarts"] == 5
    assert (chosen["square"]["square_queries"], chosen["square"]["square_restarts"]) == (10000, 2)
    assert ATTACKS["square"].label(chosen["square"]) == "square-10000x2"


def test_the_stronger_square_joins_the_per_example_worst_case(masked):
    """The follow-up's breaks join the worst case: robust = clean and AutoAttack and
    square, example by example, and here it finds what AutoAttack's Square left."""
    model, x, y = masked
    result = evaluate_model(model, x, y, attacks=("autoattack", "square"), eps=EPS, batch_size=16,
                            attack_options={"autoattack": {"version": "custom", "square_queries": 30,
                                                           "attacks": ["apgd-ce", "square"]},
                                            "square": {"square_queries": 100, "square_restarts": 2}})
    flags = result.correct
    assert set(result.attack_accuracy) == {"autoattack", "square-100x2"}
    assert torch.equal(flags["worst_case"], flags["clean"] & flags["autoattack"] & flags["square-100x2"])
    assert result.attack_accuracy["square-100x2"] < result.attack_accuracy["autoattack"]
    assert result.worst_case_accuracy == float(flags["worst_case"].float().mean())
    assert result.worst_case_accuracy <= min(result.attack_accuracy.values())


# ---------- the command line, eval.json, the report ----------
def _masked_and_quick(real):
    """APGD-CE finds nothing (as on a masked model) and AutoAttack's own Square (1 restart)
    makes 20 queries, so the run is fast; the square follow-up runs as asked."""
    def attack_batch(adversary, attack, xb, yb, device):
        if attack == "apgd-ce":
            return xb
        if adversary.square.n_restarts == 1:
            adversary.square.n_queries = 20
        return real(adversary, attack, xb, yb, device)
    return attack_batch


def test_eval_marks_the_flagged_figures_and_runs_the_follow_up(tiny_toy_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_toy_run, run)
    monkeypatch.setattr(aa_module, "_attack_batch", _masked_and_quick(aa_module._attack_batch))
    argv = ["eval", str(run), "--attacks", "autoattack,square", "--aa-version", "custom",
            "--aa-attacks", "apgd-ce,square", "--square-queries", "40", "--square-restarts", "2",
            "--aa-state", str(tmp_path / "aa.json"), "--square-state", str(tmp_path / "square.json"),
            "--eps", "0.3", "--n", "20", "--no-progress", "--no-diagnostics"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads((run / "eval.json").read_text())
    after = record["autoattack"]["accuracy_after"]
    drop = after["apgd-ce"] - after["square"]
    assert drop > 0.002  # the premise: Square broke what APGD-CE did not
    assert record["attack_settings"]["square-40x2"]["square_queries"] == 40
    assert record["attack_settings"]["square-40x2"]["square_restarts"] == 2
    assert record["worst_case_accuracy"] <= min(record["attack_accuracy"].values())
    flag = f"{SQUARE_FLAG_START} {drop:.2%}"
    assert any(w.startswith(flag) for w in record["autoattack"]["warnings"])
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert rows["autoattack"].split()[1:3] == [f"{100 * record['attack_accuracy']['autoattack']:.2f}", "†"]
    assert rows["worst"].split()[2:4] == [f"{100 * record['worst_case_accuracy']:.2f}", "†"]
    assert "†" not in rows["square-40x2"] and "†" not in rows["clean"]
    assert f"† autoattack flagged by AutoAttack's own check: {flag}" in out
    square = f"{100 * record['attack_accuracy']['square-40x2']:.2f}"
    assert f"Square follow-up in it: square-40x2 {square}%" in out

    # the same command again (--force) resumes both attacks from their state files
    def must_not_run(*args):
        raise AssertionError("an attack ran again")
    monkeypatch.setattr(aa_module, "_attack_batch", must_not_run)
    assert main(argv + ["--force"]) == 0
    capsys.readouterr()
    again = json.loads((run / "eval.json").read_text())
    assert again["attack_accuracy"] == record["attack_accuracy"]

    # the report: the marked figures and the flag's text, also for an eval.json written
    # before adrnet made the Square check (its warnings without the flag)
    record["autoattack"]["warnings"] = []
    (run / "eval_older.json").write_text(json.dumps(record))
    assert main(["report", str(run), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.md").read_text()
    aa = f"{100 * record['attack_accuracy']['autoattack']:.2f} †"
    worst = f"{100 * record['worst_case_accuracy']:.2f} †"
    rows = [line for line in page.splitlines() if line.startswith("| run | best |")]
    assert len(rows) == 2 and all(f"| {aa} |" in row and f"| {worst} |" in row for row in rows)
    for name in ("eval.json", "eval_older.json"):
        assert f"† run \\[{name}\\]: autoattack flagged by AutoAttack's own check: {flag}" in page
    html = (tmp_path / "report.html").read_text()
    assert f"<td class='num'>{aa}</td>" in html and flag in html


def test_an_unflagged_evaluation_prints_as_before():
    """No mark, no note, no change in the table when nothing flagged."""
    record = {"dataset": "d", "model": "m", "objective": "o", "split": "test", "n": 500, "norm": "linf",
              "eps": 0.3, "clean_accuracy": 0.99, "worst_case_accuracy": 0.866,
              "attack_accuracy": {"autoattack": 0.866},
              "autoattack": {"warnings": [], "accuracy_after": {
                  "apgd-ce": 0.8679999709129333, "square": 0.8659999966621399}}}
    assert format_eval(record).splitlines()[1:] == [
        "attack      accuracy (%)", "clean          99.00", "autoattack     86.60", "worst case     86.60"]


@pytest.mark.parametrize("args, expected", [
    (["--square-queries", "50"], "--square-queries is an option of the square attack: add square to --attacks"),
    (["--attacks", "pgd", "--square-restarts", "3", "--square-state", "s.json"],
     "--square-restarts, --square-state are options of the square attack"),
    (["--attacks", "square", "--square-queries", "2000000"],
     "Square's queries must be a whole number from 1 to 1000000, got 2000000"),
    (["--attacks", "square", "--square-restarts", "5000"],
     "Square's restarts must be a whole number from 1 to 1000, got 5000"),
])
def test_square_options_that_cannot_be_used_are_one_error_line(tiny_toy_run, tmp_path, capsys, args, expected):
    code = main(["eval", str(tiny_toy_run), "--out", str(tmp_path / "e.json"), "--n", "5", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "e.json").exists()


def test_the_readme_headline_and_quality_table_carry_the_flag():
    """benchmarks/quality.py writes the README headline and docs/results.md: the recipe's
    figure, whose Square lowered it 0.80 points below FAB-T, is marked with the flag's
    text; the demo's (Square: 1 image in 500, the margin) is not."""
    import importlib.util
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_flags", script)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    chosen = quality.RECIPE_CANDIDATES[1]

    def entry(autoattack: float, after: dict, n: int) -> dict:
        return {"preset": "configs/b.toml", "train_seconds": 1500.0, "threads": 2, "machine": "CPU X",
                "torch": "2", "summary": {"clean": 0.99, "pgd": 0.95, "eps": 0.3, "eval_seconds": 60.0,
                                          "autoattack": autoattack, "autoattack_n": n,
                                          "autoattack_after": after}}
    results = {"mnist_adr_pgd_s0": entry(0.8659999966621399, {"apgd-ce": 0.8679999709129333,
                                                              "square": 0.8659999966621399}, 500),
               chosen: entry(0.923, {"apgd-ce": 0.938, "apgd-t": 0.933, "fab-t": 0.931, "square": 0.923}, 1000)}
    scores = {name: {"apgd_ce": 0.93 if name == chosen else 0.90} for name in quality.RECIPE_CANDIDATES}
    headline = quality.headline(results, scores)
    assert "**86.60% under AutoAttack** (" in headline and "**92.30% under AutoAttack**† (" in headline
    assert headline.count("†") == 2
    assert f"† {chosen}'s AutoAttack figure, flagged by AutoAttack's own check: {SQUARE_FLAG_START} 0.80% " \
           "(93.10% after apgd-ce, apgd-t, fab-t, 92.30% after square)" in headline
    table = quality.table(results, scores)
    assert f"| {chosen} | `{Path(quality.RUNS[chosen].preset).name}` | 99.00 | 95.00 | 92.30 † | 1000 |" in table
    assert "| mnist_adr_pgd_s0 | `mnist_quick_adr.toml` | 99.00 | 95.00 | 86.60 | 500 |" in table
    assert f"- † {chosen}'s AutoAttack figure" in table and "92.30%† at ε = 0.3" in table


def test_the_ablation_table_carries_the_flag(tmp_path):
    """`adrnet ablate`'s table and CSV: the flagged run's AutoAttack figure is marked, the
    flag's text below; an unflagged run's cell is as before."""
    from adrnet.study import write_tables

    def entry(autoattack: float, after: dict) -> dict:
        return {"summary": {"n": 300, "clean": 0.99, "pgd": 0.95, "pgd_steps": 40, "eps": 0.3,
                            "norm": "linf", "autoattack": autoattack, "autoattack_n": 100,
                            "autoattack_after": after, "autoattack_warnings": []}}
    md, csv = write_tables({"base": entry(0.90, {"apgd-ce": 0.90, "square": 0.90}),
                            "full": entry(0.88, {"apgd-ce": 0.91, "square": 0.88})}, tmp_path)
    text = md.read_text()
    assert "| base | 99.00 (+0.00 / +0.00) | 95.00 (+0.00 / +0.00) | 90.00 (+0.00 / +2.00) |" in text
    assert "| full | 99.00 (+0.00 / +0.00) | 95.00 (+0.00 / +0.00) | 88.00 (-2.00 / +0.00) † |" in text
    assert f"† full: AutoAttack flagged by its own check: {SQUARE_FLAG_START} 3.00% (91.00% after apgd-ce" in text
    header, base, full = csv.read_text().splitlines()
    assert header.endswith(",autoattack_flags") and base.endswith(",") and SQUARE_FLAG_START in full
