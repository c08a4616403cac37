"""The examples run as documented (with a smaller budget) and produce their figures."""

import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("torch_one_thread")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_toy_example_trains_both_objectives_and_draws_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    toy = runpy.run_path(str(EXAMPLES / "toy.py"))
    out = toy["main"](["--out", str(tmp_path / "toy.png"), "--epochs", "1"])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 855)  # 2 columns x 2 rows of panels at dpi 90
