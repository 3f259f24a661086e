"""Style change: z trajectories, prefix identity over chained chunks, targets, generate.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import DictConfig

from lofibeats.commands.generate import generate
from lofibeats.errors import ConfigError, LofiError
from lofibeats.generation.longform import generate_long
from lofibeats.generation.style import StyleChange, StylePath, clip_latent, style_path, z_trajectory

from helpers import REPO, RUN_CKPT, SR, save_checkpoint, save_tiny_checkpoint, sines, tiny_vseq2seq


def two_z(batch: int = 2, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen)


# --------------------------------------------------------------------------- trajectories
def test_trajectory_is_the_base_before_the_change_and_the_target_after_the_blend() -> None:
    base, target = two_z()
    z = z_trajectory(base, [StyleChange(at=10, target=target, blend=4)], start=0, length=20)
    assert z.shape == (2, 20, 3)
    assert torch.equal(z[:, :10], base[:, None].expand(-1, 10, -1))  # bit for bit
    assert torch.allclose(z[:, 13:], target[:, None].expand(-1, 7, -1))
    assert torch.allclose(z[:, 10], base + 0.25 * (target - base))
    jump = z_trajectory(base, [StyleChange(at=10, target=target, blend=0)], 0, 20)
    assert torch.equal(jump[:, :10], z[:, :10]) and torch.allclose(jump[:, 10:], target[:, None])


def test_blending_is_continuous_with_steps_bounded_by_the_blend() -> None:
    base, target = two_z()
    third = -base
    changes = [StyleChange(100, target, blend=50), StyleChange(120, third, blend=80)]  # overlap
    z = z_trajectory(base, changes, 0, 300)
    steps = (z[:, 1:] - z[:, :-1]).norm(dim=-1)
    largest = max((target - base).norm(dim=-1).max(), (third - target).norm(dim=-1).max())
    assert steps.max() <= 2 * largest / 50 + 1e-6  # no jump bigger than two blends' slopes
    assert torch.allclose(z[:, -1], third)


def test_style_path_in_chunks_equals_the_whole_trajectory() -> None:
    base, target = two_z()
    changes = [StyleChange(37, target, blend=20)]
    path = StylePath(base, changes)
    chunks = torch.cat([path.take(n) for n in (16, 16, 16, 5, 30)], dim=1)
    assert path.position == 83
    assert torch.equal(chunks, z_trajectory(base, changes, 0, 83))


# --------------------------------------------------------------------------- long-form generation
def test_audio_before_the_change_is_identical_and_differs_after() -> None:
    model = tiny_vseq2seq().eval()
    prime, n_samples, at = sines(2, 100), 200, 100  # chunks of 32: the change is mid-chunk

    def run(**style) -> torch.Tensor:
        path = style_path(model, prime, batch=2, n_samples=n_samples, seed=3, **style)
        return generate_long(model, prime, n_samples, seed=3, z=path)

    plain = run()
    changed = run(change_at=at / SR, target="random", blend=0.0)
    assert torch.equal(changed[:, :at], plain[:, :at])
    assert not torch.equal(changed[:, at:], plain[:, at:])
    assert torch.equal(run(change_at=at / SR, target="random", blend=0.0), changed)
    assert torch.equal(run(), plain)
    unprimed = style_path(model, None, batch=3, n_samples=10, seed=0, creativity=0.5)
    latent_gen = torch.Generator().manual_seed(7919)  # seed + LATENT_SEED_OFFSET
    expected = model.net.latent_from_audio(None, creativity=0.5, batch=3, generator=latent_gen)
    assert torch.equal(unprimed.base, expected)


def test_clip_target_is_its_posterior_mean(tmp_path: Path) -> None:
    model = tiny_vseq2seq().eval()
    clip = sines(1, 40, freq=300.0)[0]  # shorter than the context: one left-padded window
    sf.write(tmp_path / "clip.wav", clip.numpy(), SR, subtype="FLOAT")
    padded = torch.cat([torch.zeros(model.context_len - 40), clip])[None]
    expected = model.net.posterior(model.net.head.tokens(padded))[0][0]
    assert torch.allclose(clip_latent(model, tmp_path / "clip.wav"), expected, atol=1e-6)
    path = style_path(
        model,
        sines(2, 100),
        batch=2,
        n_samples=64,
        change_at=0.001,
        target=str(tmp_path / "clip.wav"),
        blend=0.002,
    )
    z = path.take(64)
    assert torch.allclose(z[:, -1], expected.expand(2, -1), atol=1e-6)


@pytest.mark.parametrize(
    ("style", "message"),
    [
        ({"change_at": [0.001, 0.002], "target": ["random"]}, "one target"),
        ({"change_at": 0.001}, "one target"),
        ({"target": "random"}, "style_target is set but style_change_at is not"),
        ({"change_at": 1.0, "target": "random"}, "style_change_at=1: past the end"),
        ({"change_at": -0.1, "target": "random"}, "style_change_at=-0.1"),
        (
            {"change_at": [0.001, 0.002], "target": ["random"] * 2, "blend": [0, 1, 2]},
            "style_blend",
        ),
        ({"change_at": 0.001, "target": "nowhere.wav"}, "style_target=nowhere.wav: no such file"),
    ],
)
def test_bad_style_options_are_one_line_config_errors(style, message) -> None:
    with pytest.raises(LofiError) as info:
        style_path(tiny_vseq2seq().eval(), None, batch=1, n_samples=64, **style)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_style_change_needs_z_at_every_step() -> None:
    with pytest.raises(ConfigError, match="model.z_every_step=false"):
        style_path(
            tiny_vseq2seq(z_every_step=False).eval(),
            None,
            batch=1,
            n_samples=64,
            change_at=0.001,
            target="random",
        )


# --------------------------------------------------------------------------- generate.py
@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """This module's `ckpt` is a vseq2seq (conftest's is a seq2seq)."""
    return save_checkpoint(tmp_path / RUN_CKPT, tiny_vseq2seq())


def test_generate_with_creativity_and_style_change_keeps_the_prefix(
    make_cfg: Callable[..., DictConfig], ckpt: Path
) -> None:
    def take(run: str, *overrides: str) -> np.ndarray:
        cfg = make_cfg(
            "generate",
            [
                "progress=false",
                "n=2",
                "seconds=0.03",
                "prime=none",
                f"ckpt={ckpt}",
                "creativity=0.5",
                *overrides,
            ],
            run=run,
        )
        generate(cfg)
        return sf.read(Path(cfg.out_dir) / "take_01.wav")[0]

    plain = take("plain")
    changed = take(
        "changed",
        "style_change_at=[0.01,0.02]",
        "style_target=[random,random]",
        "style_blend=0.001",
    )
    at = round(0.01 * SR)
    assert plain.shape == changed.shape == (240,)
    assert np.array_equal(plain[:at], changed[:at]) and not np.array_equal(plain, changed)


def test_generate_refuses_latent_options_it_cannot_honour(
    make_cfg: Callable[..., DictConfig], ckpt: Path, tmp_path: Path
) -> None:
    base = ["progress=false", "n=1", "seconds=0.01", "prime=none"]
    with pytest.raises(ConfigError, match="options.crossfade"):
        generate(
            make_cfg(
                "generate",
                [
                    *base,
                    f"ckpt={ckpt}",
                    "options.crossfade=4",
                    "style_change_at=0.001",
                    "style_target=random",
                ],
            )
        )
    seq2seq = save_tiny_checkpoint(tmp_path / "seq2seq.ckpt")  # a seq2seq checkpoint
    with pytest.raises(ConfigError, match="creativity: only vseq2seq models have a latent z"):
        generate(make_cfg("generate", [*base, f"ckpt={seq2seq}", "creativity=1"]))


def test_cli_subprocess_with_a_style_change_to_a_clip(ckpt: Path, tmp_path: Path) -> None:
    sf.write(tmp_path / "target.wav", sines(1, 400, freq=500.0)[0].numpy(), SR)
    result = subprocess.run(
        [sys.executable, "generate.py", "ckpt=last", "seconds=0.05", "prime=none", "n=1", "progress=false",
         "style_change_at=0.02", f"style_target={tmp_path / 'target.wav'}", f"paths.root_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wav,) = (tmp_path / "outputs/generate").glob("*/*/take_00.wav")
    assert sf.info(wav).frames == 400 and "vseq2seq" in result.stdout
