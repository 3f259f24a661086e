"""Checkpoints written by lofibeats 0.1 (before the plain-network redesign) still load and
generate exactly what that code generated (tests/data/legacy/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lofibeats.generation.longform import generate_long
from lofibeats.models.base import CHECKPOINT_FORMAT
from lofibeats.models.checkpoint import load_module, read_checkpoint
from lofibeats.models.configs import RETIRED_KEYS
from lofibeats.models.sampling import Sampling

from helpers import LEGACY

FAMILIES = {"seq2seq": "seq2seq", "frame": "seq2seq", "vseq2seq": "vseq2seq", "gan": "gan"}


def legacy_prime() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    sine = 0.3 * torch.sin(torch.arange(400) * 0.05)[None].repeat(2, 1)
    return sine + 0.01 * torch.randn(2, 400, generator=gen)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_v01_checkpoint_generates_what_v01_generated(name: str, engine: str) -> None:
    path = LEGACY / f"{name}_v0.1.ckpt"
    old = torch.load(path, weights_only=True)
    assert "lofibeats_format" not in old
    if name != "gan":  # 0.1 kept decoding knobs as seq2seq / vseq2seq hyperparameters
        assert any(key in old["hyper_parameters"] for key in RETIRED_KEYS)
    module = load_module(path)
    assert module.family == FAMILIES[name]
    audio = generate_long(
        module, legacy_prime(), 300, sampling=Sampling(0.8), seed=3, engine=engine
    )
    expected = np.load(LEGACY / "expected_v0.1.npz")[f"{name}_{engine}"]
    if name == "gan":  # convolutions: oneDNN's kernel choice moves the last float bit
        np.testing.assert_allclose(audio.numpy(), expected, rtol=0, atol=1e-5)
    else:  # the same mu-law classes drawn from the same uniforms
        np.testing.assert_array_equal(audio.numpy(), expected)


def test_migrated_checkpoint_is_the_new_format(tmp_path: Path) -> None:
    """A v0.1 checkpoint rebuilt and saved again needs no migration and loads the same weights."""
    module = load_module(LEGACY / "vseq2seq_v0.1.ckpt")
    ckpt = read_checkpoint(LEGACY / "vseq2seq_v0.1.ckpt")
    module.on_save_checkpoint(ckpt)
    ckpt["state_dict"] = module.state_dict()
    ckpt["hyper_parameters"] = dict(module.hparams)
    torch.save(ckpt, tmp_path / "new.ckpt")
    again = load_module(tmp_path / "new.ckpt")
    assert (
        torch.load(tmp_path / "new.ckpt", weights_only=True)["lofibeats_format"]
        == CHECKPOINT_FORMAT
    )
    assert all(key.startswith(("net.", "tf_schedule", "kl_schedule")) for key in again.state_dict())
    reloaded = again.state_dict()
    for key, value in module.state_dict().items():
        same = (
            torch.equal(value, reloaded[key]) if torch.is_tensor(value) else value == reloaded[key]
        )
        assert same, key
