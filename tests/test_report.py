"""`adrnet report`: one self-contained HTML page with embedded images and tables, plus Markdown."""

from __future__ import annotations

import base64
import json
import re

import pytest

from adrnet.cli import main
from adrnet.errors import AdrnetError
from adrnet.report import unique_labels, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_run(folder, objective, worst, with_eval=True):
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(f'[objective]\nname = "{objective}"\n')
    lines = [{"kind": "epoch", "epoch": e, "loss": 2.0 / e, "acc_adv": 0.2 * e, "val_acc_robust": 0.15 * e}
             for e in (1, 2, 3)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"cut')
    if not with_eval:
        return folder
    tsne = {"clean": [[i, i % 3] for i in range(6)], "adv": [[i + 0.5, i % 3] for i in range(6)],
            "labels": [0, 1, 2, 0, 1, 2]}
    record = {"which": "best", "dataset": "mnist", "model": "smallcnn", "objective": objective, "split": "test",
              "n": 100, "norm": "linf", "eps": 0.3, "clean_accuracy": 0.99,
              "attack_accuracy": {"fgsm": 0.9, "pgd-200": worst + 0.01}, "worst_case_accuracy": worst,
              "attack_settings": {}, "sweeps": {"linf": [{"eps": e, "clean": 0.99, "worst_case": worst / (1 + e),
                                                          "n": 100} for e in (0.1, 0.3)]},
              "sanity": {"passed": False, "flags": ["more_steps"],
                         "checks": {"more_steps": {"passed": False, "message": "PGD-100 higher", "values": {}}}},
              "diagnostics": {"divergence": {"block1": 0.1, "block2": 0.3, "logits": 0.6}, "tsne": tsne}}
    (folder / "eval.json").write_text(json.dumps(record))
    return folder


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_html_embeds_images_and_table(tmp_path):
    runs = [_fake_run(tmp_path / "pgd_at", "pgd_at", 0.871), _fake_run(tmp_path / "adr", "adr_pgd", 0.912)]
    html_path, md_path = write_report(runs, tmp_path / "out" / "report.html")
    page = html_path.read_text()
    images = _images(page)
    assert len(images) == 4  # training curves, ε sweep, divergence, t-SNE
    assert all(image.startswith(PNG_MAGIC) and len(image) > 1000 for image in images)
    assert "<table>" in page and "87.10" in page and "91.20" in page and "pgd-200" in page
    assert "src='http" not in page and 'src="http' not in page  # nothing fetched from elsewhere
    assert "FAIL: PGD-100 higher" in page
    md = md_path.read_text()
    assert md_path.name == "report.md" and "| adr | best | adr_pgd |" in md
    for name in re.findall(r"\]\((report_files/[^)]+)\)", md):
        assert (md_path.parent / name).read_bytes().startswith(PNG_MAGIC)


def test_unevaluated_run_is_explained(tmp_path):
    runs = [_fake_run(tmp_path / "a", "pgd_at", 0.8), _fake_run(tmp_path / "b", "trades", 0.0, with_eval=False)]
    html_path, _ = write_report(runs, tmp_path / "r.html")
    page = html_path.read_text()
    assert "Not evaluated yet" in page and "b" in page
    assert len(_images(page)) == 4


def test_bad_run_dirs(tmp_path):
    with pytest.raises(AdrnetError, match="does not exist"):
        write_report([tmp_path / "missing"], tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdrnetError, match="neither config.toml nor eval.json"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    bad = _fake_run(tmp_path / "bad", "pgd_at", 0.5)
    (bad / "eval.json").write_text("{not json")
    with pytest.raises(AdrnetError, match="not valid JSON"):
        write_report([bad], tmp_path / "r.html")


def test_labels_unique(tmp_path):
    assert unique_labels([tmp_path / "x" / "run", tmp_path / "y" / "run"]) == ["x/run", "y/run"]


def test_cli_report_end_to_end(tiny_toy_run, tmp_path, capsys, torch_one_thread):
    assert main(["eval", str(tiny_toy_run), "--attacks", "fgsm,pgd", "--n", "60", "--steps", "3",
                 "--sweep", "0.02,0.1", "--diagnostics-n", "40", "--no-progress"]) == 0
    out = tmp_path / "rep.html"
    assert main(["report", str(tiny_toy_run), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    page = out.read_text()
    assert len(_images(page)) == 4 and tiny_toy_run.name in page
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_training_curves_of_an_ablation_keep_their_axes():
    # 12 runs (an ablation's count): one legend entry per (run, accuracy) pair made the
    # legend taller than the figure, and matplotlib then drew collapsed axes with a warning
    import warnings
    from adrnet.report.figures import training_curves
    epochs = [{"kind": "epoch", "epoch": e, "loss": 1.0 / e, "acc_clean": 0.5, "acc_adv": 0.4,
               "val_acc_clean": 0.5, "val_acc_robust": 0.3} for e in (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = training_curves({f"run {i}": epochs for i in range(12)})
    assert png.startswith(PNG_MAGIC)
