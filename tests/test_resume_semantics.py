"""What a resume keeps and what it may change (issue 22, items 5, 6 and 27).

A run keeps one validation (its radius, attack and examples), because its best checkpoint
compares every epoch's; a study keeps one config for all its rows, because the table
compares them; and a run whose data moved continues where the same data are found,
checked by the SHA-256 of its training and validation tensors, never by their path.
"""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from _train_helpers import meta, records, same_tensors, tiny_config, weights, without_timing, \
    write_config
from adrnet.cli import main
from adrnet.config import config_from_dict
from adrnet.errors import CheckpointError, ConfigError
from adrnet.study import EvalPlan, ablation_variants, check_same_study, run_study, write_tables
from adrnet.train import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _train(raw, run_dir, resume=False):
    return train(config_from_dict(raw), run_dir, resume=resume)


def _files(run_dir):
    """Every file of a run directory and its bytes (what a refused resume must not touch)."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".adrnet.lock"}


def _one_error_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- item 6: a run keeps one validation -------------------------------------------

def test_a_resume_that_changes_what_validation_measures_is_refused(tmp_path, capsys):
    """TINY validates at eval.eps = attack.eps = 0.05, PGD-3 of the default step
    2.5 x 0.05 / 3, on 200 examples; a resume changing any of these would make `best`
    compare accuracies of different measures."""
    raw = tiny_config(train={"epochs": 1})
    run = tmp_path / "run"
    _train(raw, run)
    before = _files(run)
    for section, change in [("eval", {"eps": 0.04}), ("eval", {"val_steps": 4}),
                            ("eval", {"val_step_size": 0.02}), ("eval", {"val_size": 100})]:
        longer = tiny_config(train={"epochs": 2}, **{section: {**raw[section], **change}})
        with pytest.raises(ConfigError) as refused:
            _train(longer, run, resume=True)
        (key, value), = change.items()
        assert f"eval.{key} = {value:g}" in str(refused.value), refused.value
        assert "validated alike" in str(refused.value) and "adrnet eval" in str(refused.value)
        assert _files(run) == before  # nothing trained, nothing rewritten
    line = _one_error_line(capsys, ["train", "--resume", str(run), "--set", "train.epochs=2",
                                    "--set", "eval.eps=0.04"])
    assert "eval.eps = 0.04 (it validates with 0.05)" in line
    assert _files(run) == before


def test_a_run_not_yet_validated_may_change_its_validation_then_keeps_it(tmp_path,
                                                                         monkeypatch):
    """SIGTERM during the first validation: no epoch has been validated, so the resume may
    redo it with other settings (as a PGD-10000 validation stopped by Ctrl-C is redone
    with fewer steps); the settings it validated with then hold for the rest of the run."""
    from adrnet.train import loop
    from adrnet.train.signals import TrainingInterrupted
    real = loop.attack_correct

    def signalling(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "attack_correct", signalling)
    raw = tiny_config(train={"epochs": 1})
    with pytest.raises(TrainingInterrupted, match="during the validation of epoch 1"):
        _train(raw, tmp_path / "run")
    monkeypatch.undo()
    assert records(tmp_path / "run") == [] and meta(tmp_path / "run")["best"]["value"] is None
    other = tiny_config(train={"epochs": 1}, eval={**raw["eval"], "eps": 0.04})
    _train(other, tmp_path / "run", resume=True)
    (epoch,) = records(tmp_path / "run")
    assert epoch["is_best"] and "eps = 0.04" in (tmp_path / "run" / "config.toml").read_text()
    with pytest.raises(ConfigError, match=r"eval.eps = 0.05 \(it validates with 0.04\)"):
        _train(tiny_config(train={"epochs": 2}), tmp_path / "run", resume=True)


def test_the_same_validation_written_out_resumes_bit_identical(tmp_path):
    """eval.eps set to the radius it defaulted to, the default step size written out, and
    the keys that do not change what validation measures (eval.batch_size, eval.test_steps):
    the resume goes on and equals the uninterrupted run, weights and records."""
    raw = tiny_config(train={"epochs": 2})
    _train(raw, tmp_path / "whole")
    _train(tiny_config(train={"epochs": 1}), tmp_path / "run")
    same = tiny_config(train={"epochs": 2}, eval={**raw["eval"], "eps": 0.05, "batch_size": 64,
                                                  "val_step_size": 2.5 * 0.05 / 3, "test_steps": 7})
    _train(same, tmp_path / "run", resume=True)
    assert same_tensors(weights(tmp_path / "run"), weights(tmp_path / "whole"))
    assert without_timing(records(tmp_path / "run")) == without_timing(records(tmp_path / "whole"))


# --- item 27: a run continues where its data moved, not on other data ---------------

def _mnist_config(root):
    return tiny_config(data={"name": "mnist", "root": str(root), "val_size": 50,
                             "train_subset": 0}, train={"epochs": 1})


def test_a_run_continues_after_its_data_directory_moved(tmp_path, data_writers, capsys):
    """MNIST (150 IDX training images: 100 to train, 50 to validate) under root a/, moved
    to b/: the resume reads the same tensors there and continues bit for bit. Other images
    at c/, or a checkpoint without the fingerprint (an earlier adrnet) whose data moved,
    are refused with nothing written."""
    data_writers.mnist_idx(tmp_path / "a" / "MNIST" / "raw", n_train=150, n_test=10)
    data_writers.mnist_idx(tmp_path / "c" / "MNIST" / "raw", n_train=150, n_test=10, seed=1)
    run = tmp_path / "run"
    _train(_mnist_config(tmp_path / "a"), run)
    recorded = meta(run).get("splits_sha256", "")  # the SHA-256 of what it trained on

    def resumed(root):
        raw = _mnist_config(root)
        raw["train"]["epochs"] = 2
        return raw
    _train(resumed(tmp_path / "a"), tmp_path / "whole")
    os.rename(tmp_path / "a", tmp_path / "b")
    before = _files(run)

    with pytest.raises(ConfigError) as other:
        _train(resumed(tmp_path / "c"), run, resume=True)
    assert "not those it was trained on" in str(other.value)
    assert recorded[:12] in str(other.value) and "data.root" in str(other.value)
    assert _files(run) == before
    line = _one_error_line(capsys, ["train", "--resume", str(run), "--set", "train.epochs=2",
                                    "--set", f"data.root={tmp_path / 'c'}"])
    assert "not those it was trained on" in line

    legacy = tmp_path / "legacy"
    shutil.copytree(run, legacy)
    record = json.loads((legacy / "checkpoints" / "last.json").read_text())
    record.pop("splits_sha256", None)
    (legacy / "checkpoints" / "last.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="records no fingerprint of its data"):
        _train(resumed(tmp_path / "b"), legacy, resume=True)

    _train(resumed(tmp_path / "b"), run, resume=True)
    assert same_tensors(weights(run), weights(tmp_path / "whole"))
    assert without_timing(records(run)) == without_timing(records(tmp_path / "whole"))
    assert f"root = \"{tmp_path / 'b'}\"" in (run / "config.toml").read_text()
    assert len(recorded) == 64 and meta(run)["splits_sha256"] == recorded


def test_a_damaged_data_fingerprint_is_refused(tmp_path):
    run = tmp_path / "run"
    _train(tiny_config(train={"epochs": 1}), run)
    path = run / "checkpoints" / "last.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "splits_sha256": 5}))
    with pytest.raises(CheckpointError, match="splits_sha256 = 5, not a SHA-256"):
        _train(tiny_config(train={"epochs": 2}), run, resume=True)


def test_a_run_on_a_moved_data_file_continues(tmp_path):
    """Own data (an .npz): a new data.path holding the same file continues, also from a
    checkpoint without the tensors' fingerprint (the file's SHA-256 vouches for it)."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (80, 6, 6, 3), dtype=np.uint8), np.arange(80) % 3
    np.savez(tmp_path / "a.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])

    def config(path, epochs):
        return tiny_config(data={"name": "npz", "path": str(path), "val_size": 20},
                           train={"epochs": epochs})
    run = tmp_path / "run"
    _train(config(tmp_path / "a.npz", 1), run)
    _train(config(tmp_path / "a.npz", 2), tmp_path / "whole")
    record = json.loads((run / "checkpoints" / "last.json").read_text())
    record.pop("splits_sha256", None)  # as an earlier adrnet wrote it
    (run / "checkpoints" / "last.json").write_text(json.dumps(record))
    os.rename(tmp_path / "a.npz", tmp_path / "b.npz")
    _train(config(tmp_path / "b.npz", 2), run, resume=True)
    assert same_tensors(weights(run), weights(tmp_path / "whole"))


# --- item 5: the rows of a study are measured alike --------------------------------

PLAN = EvalPlan(autoattack_n=0, progress=False, diagnostics=False)


def _ablation_config(**eval_keys):
    raw = tiny_config(train={"epochs": 1}, objective={"name": "adr_pgd"})
    raw["eval"] = {**raw["eval"], "test_steps": 3, **eval_keys}
    return raw


def test_a_study_rerun_that_would_mix_measures_is_refused(tmp_path, capsys):
    """A study stopped after its first run (base), rerun with another eval.eps, PGD-k or
    number of epochs: refused before anything is trained, where the rerun used to train
    the other runs with the new config and put ε 0.05 and ε 0.04 rows into one table."""
    raw = _ablation_config()
    out = tmp_path / "study"
    first = run_study({"base": ablation_variants(config_from_dict(raw))["base"]}, out, PLAN)
    assert first["base"]["summary"]["eps"] == 0.05 and first["base"]["summary"]["pgd_steps"] == 3
    before = _files(out)
    for changed, message in [(_ablation_config(eps=0.04), "eval.eps = 0.04 (run base has 0.05)"),
                             (_ablation_config(test_steps=4), "eval.test_steps = 4 (run base has 3)"),
                             ({**raw, "train": {**raw["train"], "epochs": 2}},
                              "train.epochs = 2 (run base has 1)")]:
        with pytest.raises(ConfigError) as refused:
            run_study(ablation_variants(config_from_dict(changed)), out, PLAN)
        assert message in str(refused.value) and "another --out" in str(refused.value)
        assert _files(out) == before and not (out / "full").exists()
    path = write_config(tmp_path / "adr.toml", raw)
    line = _one_error_line(capsys, ["ablate", "--config", str(path), "--out", str(out),
                                    "--set", "eval.eps=0.04", "--aa-n", "0", "--no-progress",
                                    "--no-diagnostics"])
    assert "eval.eps = 0.04 (run base has 0.05)" in line
    assert _files(out) == before

    # what does not change a row passes: the radius written out, execution keys, and the
    # config's PGD-k where the plan overrides it (every run is then evaluated again, alike)
    same = _ablation_config(eps=0.05, batch_size=64)
    check_same_study(ablation_variants(config_from_dict(same)), out, PLAN)
    check_same_study(ablation_variants(config_from_dict(_ablation_config(test_steps=9))), out,
                     EvalPlan(pgd_steps=5, autoattack_n=0))


def test_a_table_of_rows_evaluated_differently_is_refused(tmp_path):
    def entry(eps, pgd):
        return {"summary": {"n": 300, "clean": 0.9, "pgd": pgd, "pgd_steps": 200, "eps": eps,
                            "norm": "linf"}}
    with pytest.raises(ConfigError, match=r"runs full and base were evaluated differently "
                                          r"\(eps 0.2 against 0.05\)"):
        write_tables({"base": entry(0.05, 0.8), "full": entry(0.2, 0.481)}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    md, _ = write_tables({"base": entry(0.05, 0.8), "full": entry(0.05, 0.7)}, tmp_path)
    assert "-10" in md.read_text()  # full is 10 points below base
