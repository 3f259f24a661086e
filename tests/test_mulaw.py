"""Mu-law companding and 256-class quantisation."""

from __future__ import annotations

import math

import torch

from lofibeats.audio.mulaw import (
    N_CLASSES,
    class_edges,
    dequantize,
    mulaw_decode,
    mulaw_encode,
    quantize,
)


def test_encode_decode_round_trip_and_shape_of_the_curve() -> None:
    x = torch.linspace(-1, 1, 2001)
    y = mulaw_encode(x)
    assert torch.allclose(mulaw_decode(y), x, atol=1e-5)
    assert torch.all(y[1:] > y[:-1]), "companding must be strictly increasing"
    assert mulaw_encode(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [-1.0, 0.0, 1.0]
    # mu-law gives small signals most of the range: 1% of full scale uses ~23% of it
    assert math.isclose(
        float(mulaw_encode(torch.tensor(0.01))), math.log1p(2.55) / math.log1p(255), rel_tol=1e-6
    )
    assert torch.equal(mulaw_encode(torch.tensor([-3.0, 2.0])), torch.tensor([-1.0, 1.0]))


def test_quantize_range_and_classes_are_fixed_points() -> None:
    q = torch.arange(N_CLASSES)
    assert torch.equal(quantize(dequantize(q)), q)
    x = torch.rand(10_000) * 2 - 1
    qx = quantize(x)
    assert qx.dtype == torch.int64 and qx.min() >= 0 and qx.max() <= N_CLASSES - 1
    assert quantize(torch.tensor([-1.0, 1.0])).tolist() == [0, N_CLASSES - 1]


def test_quantisation_error_is_relative_to_the_level() -> None:
    x = torch.tensor([0.001, 0.01, 0.1, 0.9])
    err = (dequantize(quantize(x)) - x).abs()
    assert err[0] < 1e-4 and err[1] < 5e-4 and err[3] < 0.02
    assert torch.all(err[1:] / x[1:] < 0.03), "above the floor, the error is a few % of the level"


def test_class_edges_bracket_each_class() -> None:
    edges = class_edges()
    assert edges.shape == (N_CLASSES + 1,)
    assert edges[0] == -math.inf and edges[-1] == math.inf
    assert torch.all(edges[1:] > edges[:-1])
    centres = dequantize(torch.arange(N_CLASSES))
    assert torch.all(centres >= edges[:-1]) and torch.all(centres < edges[1:])
    inner = edges[1:-1]
    assert torch.equal(quantize(inner + 1e-6), torch.arange(1, N_CLASSES))
    assert torch.equal(quantize(inner - 1e-6), torch.arange(0, N_CLASSES - 1))
