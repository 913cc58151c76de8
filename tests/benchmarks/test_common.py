"""``benchmarks/_common.py``: the path the benchmarks report is the path ``CrossDConv.forward`` runs; interleaved timing."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from monai_crossd.networks.blocks.crossd_conv import CrossDConv

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _common import crossd_path, measure_interleaved

psc = importlib.import_module("monai_crossd.networks.layers.per_sample_conv")  # the module, not the function


def _forward_path(layer: CrossDConv, x: torch.Tensor, monkeypatch) -> str:
    """The selector's answers during one real forward, joined as ``crossd_path`` reports them."""
    answers = []

    def spy(*args, **kwargs):
        answers.append(select(*args, **kwargs))
        return answers[-1]

    select = psc.select_path
    monkeypatch.setattr(psc, "select_path", spy)
    with torch.no_grad():
        layer(x)
    monkeypatch.setattr(psc, "select_path", select)
    if not answers:  # a shared kernel goes straight to conv
        return "static"
    if answers[0] == "materialize":  # then per_sample_conv selects, unless one sample makes it a plain conv
        return "+".join(answers) if len(answers) == 2 else "materialize+conv"
    return answers[0]


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"spatial_dims": 2, "padding": 1}, (4, 8, 32, 32)),  # many positions: kernels materialised
        ({"spatial_dims": 2, "padding": 1}, (4, 8, 4, 4)),  # 16 positions: taps mixed on CPU
        ({"spatial_dims": 2, "padding": 1, "stride": 2}, (4, 8, 8, 8)),  # stride 2 into a 4x4 map
        ({"spatial_dims": 2, "padding": 1, "padding_mode": "reflect"}, (4, 8, 4, 4)),  # padded before
        ({"spatial_dims": 2, "padding": 1}, (1, 8, 4, 4)),  # one sample
        ({"spatial_dims": 2, "padding": 1, "rotation": False}, (4, 8, 4, 4)),
        ({"spatial_dims": 3, "padding": 1}, (2, 4, 8, 8, 8)),
        ({"spatial_dims": 3, "padding": 1}, (2, 4, 3, 3, 3)),
        ({"spatial_dims": 3, "padding": 1, "kernel_3d": "raw"}, (2, 4, 3, 3, 3)),  # the raw weight: static
    ],
)
def test_crossd_path_matches_the_forward(kwargs, shape, monkeypatch):
    layer = CrossDConv(in_channels=shape[1], out_channels=6, kernel_size=3, **kwargs)
    x = torch.randn(*shape)
    assert crossd_path(layer, x) == _forward_path(layer, x, monkeypatch)


def test_measure_interleaved_alternates_the_calls():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    out = measure_interleaved(fns, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up round, then rotated rounds
    assert set(out) == set("abc") and all(row["repeats"] == 3 and row["median_ms"] >= 0 for row in out.values())
