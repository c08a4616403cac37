"""`adrnet report` against a hostile user: files it must not overwrite, runs copied and
trained further, runs that share names, several evaluations of one run, damaged records,
pipes and devices where records belong, and run names full of Markdown, HTML and TeX.
Every mistake ends as one `error:` line (exit 2) or as a note in the report, never as a
traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from adrnet.cli import main
from adrnet.report import unique_labels
from _bounded import bounded

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def record(worst=0.5, n=100, attacks=None, **extra) -> dict:
    attacks = attacks or {"pgd-10": worst}
    return {"which": "best", "objective": "pgd_at", "split": "test", "n": n, "norm": "linf",
            "eps": 0.03137, "clean_accuracy": 0.9, "attack_accuracy": attacks,
            "worst_case_accuracy": worst, **extra}


def fake_run(folder: Path, evaluations: dict | None = None, metrics: list | None = None) -> Path:
    """A run directory of records only: config.toml, metrics.jsonl, eval files."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text('[objective]\nname = "pgd_at"\n')
    lines = metrics if metrics is not None else [
        json.dumps({"kind": "epoch", "epoch": e, "loss": 1.0 / e, "acc_adv": 0.2 * e}) for e in (1, 2)]
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    for name, content in (evaluations if evaluations is not None else {"eval.json": record()}).items():
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def report(args, capsys) -> tuple[int, str, str]:
    with bounded(30):
        code = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- fault 2: what a report may overwrite ----

def test_report_never_overwrites_a_file_it_did_not_write(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    saved = {p: p.read_bytes() for p in run.iterdir()}
    (tmp_path / "X.md").write_text("my notes")
    (tmp_path / "mine.html").write_text("<p>my page</p>")
    (tmp_path / "to_config.html").symlink_to(run / "config.toml")
    (run / "checkpoints").mkdir()
    cases = {tmp_path / "X.html": "was not written by adrnet report",          # its Markdown twin X.md
             tmp_path / "mine.html": "was not written by adrnet report",
             run / "config.toml": "of run directory",
             tmp_path / "to_config.html": "of run directory",                   # through a link
             run / "metrics.html": "of run directory",
             run / "eval_report.json": "of run directory",
             run / "checkpoints" / "r.html": "of run directory"}
    for out, needle in cases.items():
        code, _, err = report([run, "--out", out], capsys)
        assert code == 2 and needle in one_error_line(err), out
    assert (tmp_path / "X.md").read_text() == "my notes" and not (tmp_path / "X.html").exists()
    assert (tmp_path / "mine.html").read_text() == "<p>my page</p>"
    assert {p: p.read_bytes() for p in run.iterdir() if p.is_file()} == saved
    assert sorted(p.name for p in run.iterdir()) == sorted([*(p.name for p in saved), "checkpoints"])
    assert not any((run / "checkpoints").iterdir())

    # its own report is replaced; a user's image in its image folder is not
    out = tmp_path / "r.html"
    assert report([run, "--out", out], capsys)[0] == 0
    assert report([run, "--out", out], capsys)[0] == 0
    image = tmp_path / "r_files" / "training_curves.png"
    image.write_bytes(PNG_MAGIC + b"my own figure")
    code, _, err = report([run, "--out", out], capsys)
    assert code == 2 and "r_files/training_curves.png" in one_error_line(err)
    assert image.read_bytes() == PNG_MAGIC + b"my own figure"


def test_a_report_written_before_the_marker_is_still_replaced(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    out = tmp_path / "r.html"
    assert report([run, "--out", out], capsys)[0] == 0
    # the pages as an adrnet without the marker line wrote them
    marker = "<!-- written by adrnet report: running it again overwrites this file -->\n"
    page = out.read_text().replace("<!DOCTYPE html>\n" + marker.strip() + "\n<html>", "<!DOCTYPE html><html>")
    assert page.startswith("<!DOCTYPE html><html><head>")
    out.write_text(page)
    md = tmp_path / "r.md"
    md.write_text(md.read_text().replace(marker + "\n", ""))
    assert report([run, "--out", out], capsys)[0] == 0
    assert md.read_text().startswith(marker)


# ---- fault 4: a run copied, then trained further ----

def test_a_copied_run_trained_further_does_not_show_its_old_evaluation(
        tiny_toy_run, tmp_path, capsys, torch_one_thread):
    original, copy = tmp_path / "original", tmp_path / "copy"
    shutil.copytree(tiny_toy_run, original)
    evaluate = ["--which", "last", "--attacks", "fgsm", "--n", "30", "--no-diagnostics", "--no-progress"]
    assert main(["eval", str(original), *evaluate]) == 0
    first = json.loads((original / "eval.json").read_text())
    shutil.copytree(original, copy)
    assert main(["train", "--resume", str(copy), "--set", "train.epochs=3"]) == 0
    capsys.readouterr()
    shown = f"{100 * first['worst_case_accuracy']:.2f}"
    code, _, err = report([copy, "--out", tmp_path / "copy.html"], capsys)
    page = (tmp_path / "copy.html").read_text()
    assert code == 0 and "computed on earlier weights" in page and "warning: 1 " in err
    assert f"<td class='num'>{shown}</td>" not in page
    # the original, whose weights did not change, still shows it
    assert report([original, "--out", tmp_path / "original.html"], capsys)[0] == 0
    assert f"<td class='num'>{shown}</td>" in (tmp_path / "original.html").read_text()


# ---- fault 7: runs that share their last names ----

def test_runs_sharing_their_last_two_names_each_get_a_row(tmp_path, capsys):
    a = fake_run(tmp_path / "a" / "x" / "run", {"eval.json": record(worst=0.4111)})
    b = fake_run(tmp_path / "b" / "x" / "run", {"eval.json": record(worst=0.5222)})
    assert unique_labels([a, b]) == ["a/x/run", "b/x/run"]
    assert unique_labels([a, a]) == ["run", "run (2)"]
    assert report([a, b, a, "--out", tmp_path / "r.html"], capsys)[0] == 0
    md = (tmp_path / "r.md").read_text()
    assert "| a/x/run |" in md and "| b/x/run |" in md and "| a/x/run (2) |" in md
    assert "41.11" in md and "52.22" in md


# ---- fault 8: every evaluation of a run ----

def test_every_evaluation_of_a_run_is_shown_and_the_lower_one_named(tmp_path, capsys):
    run = fake_run(tmp_path / "demo", {
        "eval.json": record(worst=0.9233, n=10000, attacks={"pgd-20": 0.9233}),
        "eval_autoattack.json": record(worst=0.88, n=100, attacks={"autoattack": 0.88})})
    assert report([run, "--out", tmp_path / "r.html"], capsys)[0] == 0
    md = (tmp_path / "r.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| demo |")]
    assert len(rows) == 2
    assert "| eval.json | test | 10000 |" in rows[0] and "92.33" in rows[0]
    assert "| eval_autoattack.json | test | 100 |" in rows[1]
    assert "88.00" in rows[1]
    assert "worst case (its attacks)" in md
    assert "gives 88.00%, lower than the worst case 92.33%" in md


def test_an_evaluation_of_other_weights_among_several_is_set_aside(tiny_toy_run, tmp_path, capsys,
                                                                   torch_one_thread):
    run = tmp_path / "run"
    shutil.copytree(tiny_toy_run, run)
    evaluate = ["--which", "last", "--attacks", "fgsm", "--n", "30", "--no-diagnostics", "--no-progress"]
    assert main(["eval", str(run), *evaluate, "--out", str(run / "eval_fgsm.json")]) == 0
    other = json.loads((run / "eval_fgsm.json").read_text())
    other["weights_sha256"] = "0" * 64
    (run / "eval_old.json").write_text(json.dumps(other))
    capsys.readouterr()
    code, _, err = report([run, "--out", tmp_path / "r.html"], capsys)
    md = (tmp_path / "r.md").read_text()
    assert code == 0 and "warning: 1 " in err
    assert "| eval_fgsm.json |" in md and "| eval_old.json |" not in md
    assert "eval_old.json was computed on earlier weights" in md


# ---- fault 13: damaged records, pipes, devices ----

DAMAGED_EVAL = {
    "a list": ("[1, 2]", "a JSON list"),
    "no split": (json.dumps({k: v for k, v in record().items() if k != "split"}), "records no split"),
    "a string accuracy": (json.dumps(record(worst="0.5")), "worst_case_accuracy is string"),
    "a list of attacks": (json.dumps(record(attacks=[0.5])), "attack_accuracy is list"),
    "an accuracy of 5": (json.dumps(record(worst=5)), "not an accuracy"),
    "not JSON": ("{cut", "not valid JSON"),
}


@pytest.mark.parametrize("case", list(DAMAGED_EVAL))
def test_a_damaged_evaluation_is_one_error_line(tmp_path, capsys, case):
    content, needle = DAMAGED_EVAL[case]
    run = fake_run(tmp_path / "run", {"eval_autoattack.json": record(), "eval.json": content})
    code, _, err = report([run, "--out", tmp_path / "r.html"], capsys)
    line = one_error_line(err)
    assert code == 2 and needle in line and "eval.json" in line
    assert not (tmp_path / "r.html").exists()


def test_damaged_optional_parts_and_metrics_lines_are_left_out_with_a_note(tmp_path, capsys):
    evaluation = record(sweeps={"linf": [{"eps": 0.01, "worst_case": 0.6}, {"eps": 0.03}],
                                "l2": [{"eps": 0.5, "worst_case": 0.4}]},
                        sanity=[1, 2], diagnostics={"divergence": [1, 2],
                                                    "tsne": {"clean": "x", "adv": [], "labels": []}},
                        precision=7)
    lines = ['{"kind": "epoch", "epoch": 1, "loss": 0.5}', "5", "[1,2]", '"x"', "null",
             '{"kind": "epoch", "epoch": "two", "loss": true, "acc_adv": "0.3"}',
             '{"kind": "epoch", "epoch": 3, "loss": Infinity, "acc_adv": NaN}',
             '{"kind": "epoch", "epoch": 1e308, "loss": 1e308}', '{"cut']
    run = fake_run(tmp_path / "run", {"eval.json": evaluation}, metrics=lines)
    code, _, err = report([run, "--out", tmp_path / "r.html"], capsys)
    assert code == 0 and err.startswith("warning: ") and len(err.strip().splitlines()) == 1
    page = (tmp_path / "r.html").read_text()
    for needle in ("its linf ε sweep (row 2 has no worst_case accuracy)", "its sanity",
                   "its divergence across layers", "its t-SNE", "its precision",
                   "4 line(s) of metrics.jsonl that are not records were skipped"):
        assert needle in page, needle
    assert "Accuracy vs ε (l2)" in page and "Accuracy vs ε (linf)" not in page


def test_pipes_devices_and_huge_files_where_records_belong(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    out = ["--out", tmp_path / "r.html"]
    eval_json = run / "eval.json"
    for name, make in (("a FIFO", os.mkfifo), ("/dev/zero", lambda p: p.symlink_to("/dev/zero")),
                       ("a folder", os.mkdir)):
        eval_json.unlink() if not eval_json.is_dir() else eval_json.rmdir()
        make(eval_json)
        code, _, err = report([run, *out], capsys)
        assert code == 2 and "not a regular file" in one_error_line(err), name
    eval_json.rmdir()
    with open(eval_json, "wb") as handle:
        handle.truncate(2**27)  # a sparse 128 MiB file: never read into memory
    code, _, err = report([run, *out], capsys)
    assert code == 2 and "larger than any eval.json" in one_error_line(err)
    eval_json.write_text(json.dumps(record()))
    os.mkfifo(run / "eval_pipe.json")
    code, _, err = report([run, *out], capsys)
    assert code == 2 and "eval_pipe.json is a FIFO (named pipe), not a regular file" in one_error_line(err)
    (run / "eval_pipe.json").unlink()
    (run / "config.toml").unlink()
    os.mkfifo(run / "config.toml")
    code, _, err = report([run, *out], capsys)
    assert code == 2 and "config.toml is a FIFO (named pipe), not a regular file" in one_error_line(err)
    (run / "config.toml").unlink()
    for make in (os.mkfifo, lambda p: p.symlink_to("/dev/zero")):
        (run / "metrics.jsonl").unlink()
        make(run / "metrics.jsonl")
        code, _, err = report([run, *out], capsys)
        assert code == 0 and "metrics.jsonl left out" in (tmp_path / "r.html").read_text()


def test_a_pipe_or_device_where_a_checkpoint_record_belongs(tmp_path, capsys):
    run = fake_run(tmp_path / "run", {"eval.json": record(weights_sha256="a" * 64, which="last")})
    (run / "checkpoints").mkdir()
    os.mkfifo(run / "checkpoints" / "last.json")
    (run / "checkpoints" / "last.prev.json").symlink_to("/dev/zero")
    assert report([run, "--out", tmp_path / "r.html"], capsys)[0] == 0
    page = (tmp_path / "r.html").read_text()
    assert "weights not checked" in page and "50.00" in page


# ---- fault 24: run names as written ----

@pytest.mark.parametrize("name", ["a$\\foo$b", "<img src=x onerror=alert(1)>", "*em* _u_ [l](x) `c` |p|"])
def test_run_names_are_shown_as_written(tmp_path, capsys, monkeypatch, name):
    import matplotlib
    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)  # a user's matplotlibrc
    run = fake_run(tmp_path / name, {"eval.json": record(
        sweeps={"linf": [{"eps": 0.01, "worst_case": 0.6}]},
        diagnostics={"divergence": {"$x$": 0.1, "_hidden": 0.2},
                     "tsne": {"clean": [[0, 0], [1, 1]], "adv": [[0, 1], [1, 0]], "labels": [0, 1]}})})
    code, _, err = report([run, "--out", tmp_path / "r.html"], capsys)
    assert code == 0, err
    md = (tmp_path / "r.md").read_text()
    assert "<img" not in md and "*em*" not in md and "[l](x)" not in md and "`c`" not in md
    row = next(line for line in md.splitlines() if line.startswith("| ") and "50.00" in line)
    assert row.count(" | ") == md.splitlines()[md.splitlines().index(row) - 2].count(" | ")
    page = (tmp_path / "r.html").read_text()
    assert "<img src=x" not in page and page.count("data:image/png;base64,") == 4
