"""AutoAttack's progress file (``--aa-state``) and the splits eval reads, against a hostile
user: a state whose fingerprint is intact but whose flags claim robustness no attack
showed, fields cut short or of the wrong type, a FIFO or a device at the state's path,
the state at the path of eval.json itself, and a data file holding no image. Every one
ends as a clear error (one `error:` line from the CLI), never a raised number, a
traceback or a hang.

The attacks are replaced by a fast, deterministic stand-in (the package's own attacks
are tested in test_autoattack.py): what is tested is adrnet's bookkeeping around them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import adrnet.attacks.autoattack as aa_module
from adrnet.attacks.autoattack import autoattack_eval
from adrnet.cli import main
from adrnet.data import load_splits
from adrnet.errors import AdrnetError, ConfigError, DataError
from _bounded import bounded

pytestmark = pytest.mark.usefixtures("torch_one_thread")
ATTACKS = ["apgd-ce", "square"]
KWARGS = dict(eps=0.08, version="custom", attacks=ATTACKS, batch_size=5)


def stand_in(adversary, attack, xb, yb, device):
    """Inverts the images whose first pixel is above a threshold of each attack (0.55
    for apgd-ce, 0.35 for square): on the 20 examples below, 17 are clean-correct, 12
    survive apgd-ce and 4 square, so the state holds breaks by either attack."""
    hit = xb.flatten(1)[:, 0] > (0.55 if attack == "apgd-ce" else 0.35)
    return torch.where(hit[:, None, None, None], 1 - xb, xb)


@pytest.fixture
def twenty(tiny_trained_model, monkeypatch):
    """(model, x, y): 20 examples, the first three labelled wrong, so the model
    misclassifies them clean; AutoAttack's attacks replaced by :func:`stand_in`."""
    model, x, y = tiny_trained_model
    y = y[:20].clone()
    y[:3] = (y[:3] + 1) % 10
    monkeypatch.setattr(aa_module, "_attack_batch", stand_in)
    return model, x[:20], y


def interrupted_after(calls: int):
    """:func:`stand_in` that raises KeyboardInterrupt at batch number ``calls`` + 1."""
    made = []

    def attack(*args):
        if len(made) == calls:
            raise KeyboardInterrupt
        made.append(1)
        return stand_in(*args)
    return attack


def saved(path: Path) -> dict:
    return json.loads(path.read_text())


def rewrite(path: Path, state: dict) -> None:
    """``state`` written as a tool that keeps the file consistent would: with its digest
    (SHA-256 of the other fields as sorted JSON) recomputed, so that what refuses it is
    the check of its fields, not the digest."""
    body = {key: value for key, value in state.items() if key != "digest"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    path.write_text(json.dumps({**body, "digest": digest}))


@pytest.fixture
def finished(twenty, tmp_path):
    """(model, x, y, state file, its contents, the result) of a finished evaluation."""
    model, x, y = twenty
    path = tmp_path / "aa_state.json"
    result = autoattack_eval(model, x, y, state_path=path, **KWARGS)
    assert (int(result.clean_correct.sum()), int(result.robust.sum())) == (17, 4)  # the premise
    assert result.accuracy_after == pytest.approx({"apgd-ce": 0.6, "square": 0.2})
    return model, x, y, path, saved(path), result


def flags(state: dict, name: str) -> torch.Tensor:
    return torch.tensor(state["robust"] if name == "robust" else state["attacked"][name])


# ---- 9: a state is believed only where it agrees with the evaluation ----

@pytest.mark.parametrize("claim", ["every example", "every clean-correct example"])
def test_a_state_claiming_robustness_cannot_raise_the_number(finished, claim):
    """A state claiming every example robust raised AutoAttack to the clean accuracy
    (95% against the true 90% in the report); one claiming the clean-correct ones does
    the same. Both are refused, and the sound file still resumes to the true number."""
    model, x, y, path, state, result = finished
    claimed = [True] * 20 if claim == "every example" else result.clean_correct.tolist()
    rewrite(path, {**state, "robust": claimed})
    expected = ("robust that the model misclassifies without any attack" if claim == "every example"
                else "robust that square, which finished, never attacked")
    with pytest.raises(ConfigError, match=expected):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)
    rewrite(path, state)
    assert torch.equal(autoattack_eval(model, x, y, state_path=path, **KWARGS).robust, result.robust)


def _set(field, value):
    return lambda state: {**state, field: value}


def _entry(field, key, value):
    return lambda state: {**state, field: {**state[field], key: value}}


@pytest.mark.parametrize("damage, message", [
    (lambda s: {**s, "robust": s["robust"][:-1]}, "robust must be a list of 20 true/false flags"),
    (lambda s: {**s, "robust": [int(v) for v in s["robust"]]}, "robust must be a list of 20"),
    (_set("robust", "all"), "robust must be a list of 20"),
    (_set("attacked", [[True] * 20]), "attacked must be an object keyed by attack name"),
    (_entry("attacked", "apgd-ce", [True] * 19), r"attacked\['apgd-ce'\]: it must be a list of 20"),
    (_entry("attacked", "fab", [False] * 20), r"attacked names \['fab'\], which this evaluation does not run"),
    (_entry("accuracy_after", "square", "0.2"), r"accuracy_after\['square'\]: '0.2' is no number from 0 to 1"),
    (_entry("accuracy_after", "square", 1.5), r"accuracy_after\['square'\]: 1.5 is no number"),
    (_set("accuracy_after", None), "accuracy_after must be an object"),
    (_set("seconds", "12"), "seconds must be a finite number >= 0, got '12'"),
    (_set("seconds", -3.0), "seconds must be a finite number >= 0"),
    (_set("seconds", None), "seconds must be a finite number >= 0"),
    (_set("bf16_only", 0), "bf16_only belongs to bf16 evaluations, and this one is fp32"),
    (_set("robust_override", True), r"unknown field\(s\) \['robust_override'\]"),
    (lambda s: {k: v for k, v in s.items() if k != "attacked"}, r"field\(s\) \['attacked'\] are missing"),
])
def test_damaged_fields_are_refused_by_name(finished, damage, message):
    """Cut, mistyped or unknown fields gave tracebacks (a list cut short, a string for a
    number) or were believed (a field no adrnet writes); each is now refused by name."""
    model, x, y, path, state, _ = finished
    rewrite(path, damage(state))
    with pytest.raises(ConfigError, match=f"is damaged: {message}"):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)


@pytest.mark.parametrize("text, message", [
    ('{"fingerprint": "x", "seconds": NaN}', "NaN is no number a state file holds"),
    ("[" * 3000, "unreadable"),
    ("[1, 2]", "is not an AutoAttack state file"),
])
def test_a_state_that_is_no_json_object_is_refused(twenty, tmp_path, text, message):
    model, x, y = twenty
    path = tmp_path / "aa_state.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)


def _first(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0])


def _undo_a_break_by(attack):
    """An example ``attack`` broke (the last attack that ran on it) counted robust again."""
    def damage(state):
        robust, apgd, square = (flags(state, name) for name in ("robust", "apgd-ce", "square"))
        broke = ~robust & (square if attack == "square" else apgd & ~square)
        robust[_first(broke)] = True
        return {**state, "robust": robust.tolist()}
    return damage


def _unattack(name, which):
    """``which`` example(s) marked as not attacked by ``name``."""
    def damage(state):
        robust, apgd, square = (flags(state, n) for n in ("robust", "apgd-ce", "square"))
        pick = {"robust": robust, "broken by apgd-ce": apgd & ~square & ~robust}[which]
        attacked = flags(state, name)
        attacked[_first(pick)] = False
        return {**state, "attacked": {**state["attacked"], name: attacked.tolist()}}
    return damage


def _attack_a_misclassified(state):
    return {**state, "attacked": {**state["attacked"], "apgd-ce": [True] * 20}}


@pytest.mark.parametrize("damage, message", [
    (_undo_a_break_by("square"), r"accuracy_after\['square'\] is 0.2.*, but its flags leave 5 of 20"),
    (_undo_a_break_by("apgd-ce"), "robust that square, which finished, never attacked"),
    (_entry("accuracy_after", "apgd-ce", 0.65), r"accuracy_after\['apgd-ce'\] is 0.65, but its flags leave 12"),
    (_unattack("apgd-ce", "robust"), "attacked by square but not by apgd-ce, which runs before it"),
    (_unattack("apgd-ce", "broken by apgd-ce"), "broken that no attack ran on"),
    (_attack_a_misclassified, "marks as attacked examples the model misclassifies without any attack"),
    (lambda s: {**s, "accuracy_after": {"square": 0.2}},
     r"accuracy_after says \['square'\] finished, but attacks run in the order"),
    (_set("accuracy_after", {}), "square has started, but apgd-ce, which runs before it, has not finished"),
])
def test_flags_that_no_evaluation_can_write_are_refused(finished, damage, message):
    """Each attack runs on the examples still robust, in order, and records what it did;
    flags that contradict that (a break undone, an attack skipped, a finished attack's
    accuracy that its flags do not give) are refused, even with the digest recomputed."""
    model, x, y, path, state, _ = finished
    rewrite(path, damage(state))
    with pytest.raises(ConfigError, match=message):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)


def test_the_digest_refuses_a_change_the_flags_cannot_show(twenty, tmp_path, monkeypatch):
    """Square interrupted after its first batch: a break it made, undone in the file,
    leaves flags that agree with every rule (square has not finished); the digest that
    adrnet writes with the fields refuses the changed file."""
    model, x, y = twenty
    path = tmp_path / "aa_state.json"
    monkeypatch.setattr(aa_module, "_attack_batch", interrupted_after(4 + 1))  # apgd-ce: 4 batches
    with pytest.raises(KeyboardInterrupt):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)
    state = saved(path)
    robust = flags(state, "robust")
    assert "square" not in state["accuracy_after"] and flags(state, "square").sum() == 5
    robust[_first(flags(state, "square") & ~robust)] = True
    path.write_text(json.dumps({**state, "robust": robust.tolist()}))
    monkeypatch.setattr(aa_module, "_attack_batch", stand_in)
    with pytest.raises(ConfigError, match="do not match the digest"):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)


@pytest.mark.parametrize("judged", [False, True], ids=["fp32", "bf16"])
def test_every_state_an_evaluation_writes_resumes_to_the_uninterrupted_numbers(twenty, tmp_path,
                                                                            monkeypatch, judged):
    """No sound state is refused and no number changes: cut after each batch but the
    last (apgd-ce runs 4, square 3), each resume ends as the uninterrupted evaluation does,
    and so does a finished state read again."""
    model, x, y = twenty
    judge = {"judge": model} if judged else {}
    whole = autoattack_eval(model, x, y, **KWARGS, **judge)
    for cut in range(1, 7):
        path = tmp_path / f"cut{cut}.json"
        monkeypatch.setattr(aa_module, "_attack_batch", interrupted_after(cut))
        with pytest.raises(KeyboardInterrupt):
            autoattack_eval(model, x, y, state_path=path, **KWARGS, **judge)
        monkeypatch.setattr(aa_module, "_attack_batch", stand_in)
        resumed = autoattack_eval(model, x, y, state_path=path, **KWARGS, **judge)
        assert torch.equal(resumed.robust, whole.robust), cut
        assert resumed.accuracy_after == whole.accuracy_after, cut
        assert ("bf16_only" in saved(path)) == judged and resumed.bf16_only == 0
        again = autoattack_eval(model, x, y, state_path=path, **KWARGS, **judge)
        assert torch.equal(again.robust, whole.robust) and again.accuracy_after == whole.accuracy_after


def test_bf16_only_beyond_the_points_attacked_is_refused(twenty, tmp_path):
    model, x, y = twenty
    path = tmp_path / "aa_state.json"
    autoattack_eval(model, x, y, state_path=path, judge=model, **KWARGS)
    state = saved(path)
    attacked = sum(sum(v) for v in state["attacked"].values())
    assert attacked == 17 + 12  # apgd-ce on the clean-correct, square on apgd-ce's survivors
    rewrite(path, {**state, "bf16_only": attacked})
    assert autoattack_eval(model, x, y, state_path=path, judge=model, **KWARGS).bf16_only == attacked
    for value, message in ((attacked + 1, "bf16_only is 30, more than the 29 points attacked"),
                           (-1, "bf16_only must be a whole number >= 0"),
                           (True, "bf16_only must be a whole number >= 0")):
        rewrite(path, {**state, "bf16_only": value})
        with pytest.raises(ConfigError, match=message):
            autoattack_eval(model, x, y, state_path=path, judge=model, **KWARGS)


# ---- 14: a state file that is no regular file, or is the output ----

def test_a_fifo_state_is_refused_without_waiting_for_a_writer(twenty, tmp_path):
    """--aa-state at a FIFO hung (it waited for a writer); also through a link."""
    model, x, y = twenty
    fifo = tmp_path / "aa_state.json"
    os.mkfifo(fifo)
    (tmp_path / "link.json").symlink_to(fifo)
    for path in (fifo, tmp_path / "link.json"):
        with bounded(20), pytest.raises(AdrnetError, match="not a regular file"):
            autoattack_eval(model, x, y, state_path=path, **KWARGS)
    assert fifo.is_fifo()  # not replaced by a state file either


def test_a_device_state_is_refused_unread(twenty, tmp_path):
    """--aa-state /dev/zero read until the memory ran out."""
    model, x, y = twenty
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    for path in ("/dev/zero", tmp_path / "zero.json"):
        with bounded(20), pytest.raises(AdrnetError, match="not a regular file"):
            autoattack_eval(model, x, y, state_path=path, **KWARGS)


def test_a_state_larger_than_any_of_this_evaluation_is_refused_unread(twenty, tmp_path):
    model, x, y = twenty
    # the largest state of 20 examples: "false, " (7 bytes, 8 allowed) per example in
    # 3 lists, and 4 KiB more: 4096 + 8 x 20 x 3 = 4576 bytes = 4.5 KiB
    path = tmp_path / "aa_state.json"
    with open(path, "wb") as handle:
        handle.truncate(2**26)  # sparse: 64 MiB of zeros that take no disk
    with pytest.raises(AdrnetError, match=r"is 64.0 MiB, larger than any progress file of AutoAttack.*\(4.5 KiB at most\)"):
        autoattack_eval(model, x, y, state_path=path, **KWARGS)
    (tmp_path / "folder").mkdir()
    with pytest.raises(AdrnetError, match="it is a directory"):
        autoattack_eval(model, x, y, state_path=tmp_path / "folder", **KWARGS)


def one_error_line(capsys, *args) -> str:
    """The one error line of ``adrnet ARGS``, which must exit with status 2."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


EVAL_AA = ["--attacks", "autoattack", "--aa-version", "custom", "--aa-attacks", "apgd-ce",
           "--n", "20", "--no-diagnostics", "--no-progress"]


def test_the_state_at_the_output_is_refused_before_anything_runs(tiny_toy_run, tmp_path, capsys):
    """`--aa-state X --out X`: eval.json replaced the progress, and every rerun asked the
    user to delete the file. Refused up front, by name, through a link, by another
    spelling, as a hard link, and at the default output (RUN/eval.json)."""
    run = shutil.copytree(tiny_toy_run, tmp_path / "run")
    out = tmp_path / "e.json"
    (tmp_path / "link.json").symlink_to(out)
    for state in (out, tmp_path / "link.json", tmp_path / "sub" / ".." / "e.json"):
        line = one_error_line(capsys, "eval", run, *EVAL_AA, "--aa-state", state, "--out", out)
        assert "autoattack's state file and --out are the same file" in line and str(out) in line
        assert "--aa-state" in line and "autoattack_state.json" in line
        assert not out.exists()
    interrupted = '{"fingerprint": "an earlier, interrupted evaluation"}'
    out.write_text(interrupted)
    os.link(out, tmp_path / "hard.json")
    line = one_error_line(capsys, "eval", run, *EVAL_AA, "--aa-state", tmp_path / "hard.json",
                          "--out", out)
    assert "same file" in line and out.read_text() == interrupted  # the progress is kept
    line = one_error_line(capsys, "eval", run, *EVAL_AA, "--aa-state", run / "eval.json")
    assert "same file" in line and not (run / "eval.json").exists()
    state = tmp_path / "state.json"  # two attacks' progress in one file
    line = one_error_line(capsys, "eval", run, *EVAL_AA[:1], "autoattack,square", *EVAL_AA[2:],
                          "--aa-state", state, "--square-state", state)
    assert "square's state file and autoattack's state file are the same file" in line
    assert not state.exists() and not (run / "eval.json").exists()


# ---- 25: a split of no images ----

@pytest.mark.parametrize("empty", ["test", "train"])
def test_an_idx_file_of_no_images_is_refused_by_name(tmp_path, data_writers, empty):
    """An IDX test split of 0 images was accepted, and `adrnet eval` ended in a
    ValueError traceback; such a file is now refused when it is read, by name."""
    data_writers.mnist_idx(tmp_path, n_test=0 if empty == "test" else 12,
                           n_train=0 if empty == "train" else 30)
    name = "t10k-images-idx3-ubyte.gz" if empty == "test" else "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match=f"{name}: holds 0 images, and the {empty} split cannot be empty"):
        load_splits("mnist", tmp_path, val_size=5)


def test_the_other_built_in_formats_refuse_a_split_of_no_images(tmp_path, data_writers):
    data_writers.mnist_pickle(tmp_path / "pickle" / "mnist.pkl.gz", sizes=(20, 8, 0))
    with pytest.raises(DataError, match="mnist.pkl.gz: holds 0 images, and the test split"):
        load_splits("mnist", tmp_path / "pickle")
    data_writers.cifar(tmp_path / "cifar" / "cifar-10-batches-py", n_test=0)
    with pytest.raises(DataError, match="test_batch: holds 0 images, and the test split"):
        load_splits("cifar10", tmp_path / "cifar")


def test_eval_on_an_empty_test_split_is_one_error_line(tmp_path, data_writers, capsys):
    """The fault as a user met it: `adrnet eval` of a model on a folder whose IDX test
    split holds no image ended in a ValueError traceback."""
    from adrnet.config import load_config
    from adrnet.models import model_from_config
    data_writers.mnist_idx(tmp_path / "mnist", n_test=0)
    options = ["model.options.hidden=[4]", "data.val_size=5"]
    cfg = load_config(None, ['data.name="mnist"', 'model.name="mlp"', *options])
    torch.save(model_from_config(cfg).state_dict(), tmp_path / "w.pt")
    line = one_error_line(capsys, "eval", "--model", "mlp", "--weights", tmp_path / "w.pt",
                          "--data", "mnist", "--data-root", tmp_path / "mnist", "--eps", "0.1",
                          "--set", *options, "--no-diagnostics", "--no-progress")
    assert "t10k-images-idx3-ubyte.gz: holds 0 images, and the test split cannot be empty" in line
